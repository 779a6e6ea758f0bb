"""TLS to Consul: an HTTPS-only agent that verifies client certificates (verify_incoming).

The CA, the server certificate (SAN 127.0.0.1 and localhost) and the client certificates
are made here with cryptography, with key identifiers as `consul tls ca create` makes them,
and once more without (an operator's own CA); statesync checks the server against
CONSUL_CACERT and presents CONSUL_CLIENT_CERT/KEY.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..acl_support import one_error_line
from ..support import ConsulAgent, clean_env, kv_ready, make_tree, statesync_cmd, tree_state

pytestmark = pytest.mark.consul

_NOW = datetime.datetime.now(datetime.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number()).not_valid_before(_NOW - datetime.timedelta(minutes=5))
            .not_valid_after(_NOW + datetime.timedelta(days=1)))


def _write_key(path: Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


class CA:
    """A throwaway certificate authority writing PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str, key_ids: bool = True):
        self.dir, self.name, self.key_ids = directory, name, key_ids
        self.key = ec.generate_private_key(ec.SECP256R1())
        b = (_builder(f"statesync test {name}", _name(f"statesync test {name}"), self.key.public_key())
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False,
                                          data_encipherment=False, key_agreement=False,
                                          encipher_only=False, decipher_only=False), critical=True))
        if key_ids:
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        self.cert = b.sign(self.key, hashes.SHA256())
        self.pem = directory / f"{name}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, usages: list, sans: list | None = None) -> tuple[str, str]:
        """Sign a leaf certificate; return (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        b = (_builder(cn, self.cert.subject, key.public_key())
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if self.key_ids:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        crt, key_file = self.dir / f"{self.name}-{cn}.pem", self.dir / f"{self.name}-{cn}.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key)
        return str(crt), str(key_file)


class Pki:
    def __init__(self, directory: Path, key_ids: bool = True):
        self.ca = CA(directory, "ca", key_ids)
        self.server = self.ca.issue("server.dc1.consul", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
                                    [x509.DNSName("localhost"), x509.DNSName("server.dc1.consul"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.client = self.ca.issue("statesync", [ExtendedKeyUsageOID.CLIENT_AUTH])
        self.other_ca = CA(directory, "other-ca")
        self.untrusted_client = self.other_ca.issue("statesync", [ExtendedKeyUsageOID.CLIENT_AUTH])

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.pem))
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT  # the harness's readiness probe, on Python 3.13 too
        ctx.load_cert_chain(*self.client)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def bare_pki(tmp_path_factory) -> Pki:
    """A CA and certificates without key identifiers."""
    return Pki(tmp_path_factory.mktemp("bare-pki"), key_ids=False)


def _tls_consul(consul_bin, pki, workdir: Path, request) -> ConsulAgent:
    """A dev agent serving HTTPS only, on the port the helper picked for HTTP."""
    ctx = pki.context()
    agent = ConsulAgent(consul_bin, dev=True, workdir=str(workdir),
                        ready=lambda a: kv_ready(f"https://{a.addr}", context=ctx))
    agent.extra = ["-http-port", "-1", "-hcl", f"ports {{ https = {agent.http} }}",
                   "-hcl", "verify_incoming = true", "-hcl", "verify_outgoing = true",
                   "-hcl", f'ca_file = "{pki.ca.pem}"', "-hcl", f'cert_file = "{pki.server[0]}"',
                   "-hcl", f'key_file = "{pki.server[1]}"']
    request.addfinalizer(agent.cleanup)
    return agent.start()


@pytest.fixture(scope="module")
def tls_consul(consul_bin, pki, tmp_path_factory, request):
    return _tls_consul(consul_bin, pki, tmp_path_factory.mktemp("consul-tls"), request)


@pytest.fixture(scope="module")
def bare_tls_consul(consul_bin, bare_pki, tmp_path_factory, request):
    return _tls_consul(consul_bin, bare_pki, tmp_path_factory.mktemp("consul-tls-bare"), request)


def _runner(tls_consul, pki, tmp_path):
    def run(*args: str, root: Path, **extra: str) -> subprocess.CompletedProcess:
        env = clean_env()
        env.update(CONSUL_HTTP_ADDR=f"https://{tls_consul.addr}", CONSUL_CACERT=str(pki.ca.pem),
                   CONSUL_CLIENT_CERT=pki.client[0], CONSUL_CLIENT_KEY=pki.client[1],
                   STATESYNC_PREFIX=f"tls/{tmp_path.name}", STATESYNC_NODE="master1",
                   STATESYNC_ROOT=str(root), STATESYNC_LOG_FORMAT="json",
                   STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
        env.update(extra)
        for name in [k for k, v in env.items() if v is None]:
            del env[name]
        return subprocess.run(statesync_cmd(*args), env=env, capture_output=True, text=True, timeout=60)
    return run


@pytest.fixture
def run(tls_consul, pki, tmp_path):
    return _runner(tls_consul, pki, tmp_path)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    return one_error_line(proc)


def test_the_agent_serves_https_only(tls_consul):
    with pytest.raises(urllib.error.HTTPError) as err:  # Go answers plain HTTP on a TLS port with 400
        urllib.request.urlopen(f"http://{tls_consul.addr}/v1/status/leader", timeout=5)
    assert err.value.code == 400


def test_backup_and_restore_work_over_https_with_a_verified_server_and_a_client_certificate(run, tls_consul, tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    proc = run("backup", root=src)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("snapshot ")
    # the server certificate names localhost too, and CONSUL_HTTP_SSL turns a bare address into https
    listed = run("snapshots", root=src, CONSUL_HTTP_ADDR=f"localhost:{tls_consul.http}", CONSUL_HTTP_SSL="true")
    assert listed.returncode == 0 and listed.stdout.count("\n") == 2, listed.stderr
    dst = tmp_path / "dst"
    proc = run("restore", root=dst)
    assert proc.returncode == 0, proc.stderr
    assert tree_state(dst) == tree_state(src)


def test_a_server_certificate_from_another_ca_fails_with_one_line_about_certificate_verification(
        run, pki, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    before = tree_state(root)
    for command in ("backup", "restore"):
        line = _one_error_line(run(command, root=root, CONSUL_CACERT=str(pki.other_ca.pem)))
        assert "certificate verification" in line and "CONSUL_CACERT" in line, line
    assert tree_state(root) == before


def test_without_a_client_certificate_consul_refuses_and_statesync_says_so_in_one_line(run, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    line = _one_error_line(run("backup", root=root, CONSUL_CLIENT_CERT=None, CONSUL_CLIENT_KEY=None))
    assert "client certificate" in line and "CONSUL_CLIENT_CERT" in line, line


def test_a_client_certificate_from_an_untrusted_ca_is_rejected_in_one_line(run, pki, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    cert, key = pki.untrusted_client
    line = _one_error_line(run("backup", root=root, CONSUL_CLIENT_CERT=cert, CONSUL_CLIENT_KEY=key))
    assert "client certificate" in line and "CONSUL_CLIENT_CERT" in line, line


@pytest.mark.parametrize("raw", [
    "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate (_ssl.c:2580)",
    "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)",
    "EOF occurred in violation of protocol (_ssl.c:2427)",  # Go closed before the alert was read
])
def test_each_way_a_refused_client_certificate_surfaces_names_the_client_certificate(raw):
    from statesync.consul.transport import tls_reason as _tls_reason
    reason = _tls_reason(Exception(f"Max retries exceeded (Caused by SSLError(SSLError(1, '{raw}')))"))
    assert "client certificate" in reason and "CONSUL_CLIENT_CERT" in reason


def test_plain_http_to_the_https_port_fails_in_one_line(run, tls_consul, tmp_path):
    line = _one_error_line(run("snapshots", root=tmp_path, CONSUL_HTTP_ADDR=f"http://{tls_consul.addr}"))
    assert "HTTPS" in line, line


def test_a_private_ca_without_key_identifiers_works_over_https_on_every_python(bare_tls_consul, bare_pki, tmp_path):
    """`consul tls ca create` puts key identifiers in every certificate; an operator's own CA may
    not, and Python 3.13's default context (VERIFY_X509_STRICT) refuses such a server certificate
    ("Missing Authority Key Identifier"). statesync clears the flag (statesync/tlsclient.py), as for
    Icinga, so the CA that works on 3.11 works on 3.13, as it does for the consul CLI."""
    for cert in (bare_pki.ca.cert, x509.load_pem_x509_certificate(Path(bare_pki.server[0]).read_bytes())):
        assert not {e.oid for e in cert.extensions} & {x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER,
                                                       x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
    run = _runner(bare_tls_consul, bare_pki, tmp_path)
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    proc = run("backup", root=src)
    assert proc.returncode == 0, proc.stderr
    proc = run("restore", root=dst)
    assert proc.returncode == 0, proc.stderr
    assert tree_state(dst) == tree_state(src)
