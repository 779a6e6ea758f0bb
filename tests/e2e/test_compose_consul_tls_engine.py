"""The satellite stack of compose/ against a Consul that serves HTTPS with a certificate from
a private CA made here: CONSUL_CACERT, the one variable satellite.yml offers for it, lets the
sidecar in; without it the sidecar says in one line why it cannot be.

Bounded: one Consul container and one-off sidecar containers, all removed by ID or by their
compose project's label; no master and no Icinga 2 is started.
"""
from __future__ import annotations

import os

import pytest

from ..certs import make_ca, sign
from ..compose_support import prepare_stack_dir
from ..engine import CONSUL, Compose, docker, unique_name, wait_healthy

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SIDECAR_IMAGE = "statesync:test"
# The stand-in runs `consul agent` with this HCL; port 8500 stays plain HTTP for the health check.
TLS_HCL = ('ports { https = 8501 }', 'cert_file = "/tls/consul.crt"', 'key_file = "/tls/consul.key"')


@pytest.fixture
def tls_consul(engine, tmp_path):
    """A Consul server on a network of its own, reachable as https://consul:8501 with a
    certificate for the name ``consul`` signed by a private CA; yields (network, CA file)."""
    engine.build_statesync_image(SIDECAR_IMAGE)
    ca = make_ca("statesync test Consul CA")
    key, cert, _ = sign(ca, "consul", dns=("consul",))
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "consul.crt").write_bytes(cert)
    (tls / "consul.key").write_bytes(key)
    (tls / "consul.key").chmod(0o644)  # the stand-in's consul user reads it; a throw-away key
    ca_file = tmp_path / "consul-ca.pem"
    ca_file.write_bytes(ca.pem)
    ca_file.chmod(0o644)
    network = unique_name("sstls")
    docker("network", "create", network)
    container = ""
    try:
        hcl = [arg for line in TLS_HCL for arg in ("-hcl", line)]
        container = docker(
            "run", "-d", "--network", network, "--network-alias", "consul", "-v", f"{tls}:/tls:ro",
            "--health-cmd", "consul members", "--health-interval", "2s", "--health-retries", "60",
            CONSUL, "agent", "-server", "-bootstrap-expect=1", "-node=consul", "-client=0.0.0.0",
            "-data-dir=/consul/data", *hcl).stdout.strip()
        wait_healthy(container, 120)
        yield network, ca_file
    finally:
        if container:
            docker("rm", "-f", "-v", container, check=False)
        docker("network", "rm", network, check=False)


def _sidecar(tmp_path, network: str, **env: str) -> Compose:
    work = tmp_path / "compose"
    if not work.exists():
        prepare_stack_dir(work, ("satellite.yml", "icinga-start.sh"))
    return Compose(work / "satellite.yml", project=unique_name("sattls"), env={
        "STATESYNC_NETWORK": network, "STATESYNC_IMAGE": SIDECAR_IMAGE,
        "STATESYNC_PREFIX": f"test/{network}", "STATESYNC_CONSUL_ADDR": "https://consul:8501",
        "SATELLITE_NAME": "sattls", "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid), **env})


def test_a_satellite_reaches_a_consul_of_a_private_ca_with_consul_cacert_and_fails_in_one_line_without(
        tls_consul, tmp_path):
    network, ca_file = tls_consul
    # The variable is the only difference between the two runs; the shell's own is not inherited.
    with _sidecar(tmp_path, network, CONSUL_CACERT=str(ca_file)) as trusted:
        ok = trusted.run("statesync", "snapshots", check=False)
        assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
        print("with the CA:", ok.stdout.strip()[-300:], ok.stderr.strip()[-300:])
    with _sidecar(tmp_path, network, CONSUL_CACERT="") as untrusted:
        bad = untrusted.run("statesync", "snapshots", check=False)
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if "certificate verification" in line]
    assert len(errors) == 1, bad.stderr[-2000:]
    assert "CONSUL_CACERT" in errors[0] and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    print("without:", bad.returncode, errors[0])
