"""``statesync demo``: the whole story on one machine in about ten seconds.

Starts a throwaway Consul dev agent on free loopback ports, builds an Icinga-like
tree with a real CA, runs the master sidecar until the tree is in Consul, wipes the
tree as a container rebuild would, starts the sidecar again and shows that it
restored the same CA (fingerprint before and after). Stops everything it started.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .. import config, disk
from ..disk import CA_CERT, CA_KEY, LOCAL_CA, READY_FILE, node_cert
from ..errors import StatesyncError
from ..jsonload import loads

_REPO_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "consul" / "usr" / "bin" / "consul"


def find_consul() -> str:
    """The consul binary: $STATESYNC_CONSUL_BIN, PATH, or the project's cache; raise StatesyncError."""
    for cand in (os.environ.get("STATESYNC_CONSUL_BIN"), shutil.which("consul"), str(_REPO_CACHE)):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise StatesyncError("no consul binary found: run scripts/demo.sh, which fetches one into .cache/")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_consul(binary: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    http, server, lan, wan = _free_ports(4)
    log = open(workdir / "consul.log", "wb")
    proc = subprocess.Popen([binary, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                             "-http-port", str(http), "-server-port", str(server), "-serf-lan-port", str(lan),
                             "-serf-wan-port", str(wan), "-dns-port", "-1", "-grpc-port", "-1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    addr = f"127.0.0.1:{http}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{addr}/v1/status/leader", timeout=1) as r:
                if loads(r.read()):
                    return proc, addr
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise StatesyncError(f"the Consul dev agent did not start; see {workdir / 'consul.log'}")


def _sample_tree(root: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Icinga CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    node_key = ec.generate_private_key(ec.SECP256R1())
    node = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master1")]))
            .issuer_name(ca_name).public_key(node_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=397)).sign(ca_key, hashes.SHA256()))
    files = {
        CA_CERT: ca.public_bytes(serialization.Encoding.PEM), CA_KEY: pem_key(ca_key),
        LOCAL_CA: ca.public_bytes(serialization.Encoding.PEM),
        node_cert("master1"): node.public_bytes(serialization.Encoding.PEM), disk.node_key("master1"): pem_key(node_key),
        "icinga2.state": os.urandom(4096), "api/zones/master/_etc/hosts.conf": b'object Host "web1" {}\n',
        "api/log/current": b"replay log: excluded from snapshots\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o600 if rel.endswith(".key") else 0o644)


def _fingerprint(root: Path) -> str:
    from ..pki.fingerprint import spki_sha256
    return spki_sha256((root / CA_CERT).read_bytes())


class _Sidecar:
    def __init__(self, env: dict, log: Path):
        self._log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "statesync", "run", "--role", "master"], env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _wait(pred, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise StatesyncError(f"demo: {what} did not happen within {timeout:.0f}s")


def cmd_demo(cfg: config.Config, args: argparse.Namespace) -> int:
    return run_demo()


def run_demo(out=print) -> int:
    """Run the demo; return 0 when the CA survived the wipe. Raises StatesyncError."""
    from .. import config
    from ..sidecar.wiring import open_repo
    binary = find_consul()
    workdir = Path(tempfile.mkdtemp(prefix="statesync-demo-"))
    root = workdir / "var-lib-icinga2"
    consul, sidecar = None, None
    try:
        consul, addr = _start_consul(binary, workdir)
        out(f"1. started a throwaway Consul dev agent at {addr}")
        _sample_tree(root)
        before = _fingerprint(root)
        out(f"2. built a sample Icinga 2 state tree in {root}")
        out(f"   CA public-key fingerprint (sha256): {before}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "STATESYNC_"))}
        key_file = workdir / "statesync.key"
        from ..snapshot.crypto import format_key, generate_key
        key_file.write_text(format_key(generate_key()) + "\n")
        key_file.chmod(0o600)
        env.update(CONSUL_HTTP_ADDR=addr, STATESYNC_ROOT=str(root), STATESYNC_NODE="master1",
                   STATESYNC_LOG_FORMAT="json", STATESYNC_ENCRYPTION_KEY_FILE=str(key_file))
        cfg = config.load(env=env)
        repo = open_repo(cfg)
        sidecar = _Sidecar(env, workdir / "sidecar.log")
        rec = _wait(lambda: repo.head().record, "the first snapshot")
        out(f"3. the master sidecar mirrored it into Consul: snapshot {rec.id}, {rec.files} files, "
            f"private keys encrypted (key id {rec.key_id})")
        sidecar.stop()
        shutil.rmtree(root)
        out("4. wiped the tree, as a rebuilt container would find it")
        sidecar = _Sidecar(env, workdir / "sidecar.log")
        _wait(lambda: (root / READY_FILE).exists(), "the restore at sidecar start")
        after = _fingerprint(root)
        out("5. started the sidecar again: it restored the tree before signalling ready")
        out(f"   CA public-key fingerprint (sha256): {after}")
        same = after == before
        out("the CA survived the rebuild: every satellite would still trust this master" if same
            else "FAILED: the CA changed")
        return 0 if same else 1
    finally:
        if sidecar is not None:
            sidecar.stop()
        if consul is not None:
            consul.send_signal(signal.SIGTERM)
            try:
                consul.wait(15)
            except subprocess.TimeoutExpired:
                consul.kill()
        shutil.rmtree(workdir, ignore_errors=True)
