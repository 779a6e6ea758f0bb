"""The satellite stacks of compose/ against a Consul that serves HTTPS with a certificate from
a private CA made here. compose: CONSUL_CACERT, the one variable satellite.yml (and master.yml)
offers for it, lets the sidecar in. Swarm: the second -c file compose/swarm/consul-ca.yml with the CA as a
secret does. Without the CA each fails in one line that names the setting.

Bounded: one Consul container and one-off sidecar containers or a one-task service, all
removed by ID or name; no master and no Icinga 2 is started. The commands run are the
sidecar's own reads of Consul (`statesync snapshots`), with the stacks' environment, mounts
and secrets as the files give them. Slow: each test starts a Consul and two stacks (about
15 s each here), and the Swarm one needs the satellite image (minutes when not cached).
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ..certs import make_ca, sign
from ..compose_support import COMPOSE_DIR, prepare_stack_dir, wait
from ..engine import CONSUL, Compose, _run, container_logs, docker, inspect, unique_name, wait_healthy
from ..support import clean_env, statesync_cmd
from .test_swarm_engine import SATELLITE_IMAGE, satellite_image, swarm  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SIDECAR_IMAGE = "statesync:test"
# The stand-in runs `consul agent` with this HCL; port 8500 stays plain HTTP for the health check.
TLS_HCL = ('ports { https = 8501 }', 'cert_file = "/tls/consul.crt"', 'key_file = "/tls/consul.key"')
TLS_ERROR = "certificate verification"


def _tls_consul(tmp_path: Path, overlay: bool):
    """A Consul server on a network of its own, reachable as https://consul:8501 with a
    certificate for the name ``consul`` signed by a private CA; yields (network, CA file)."""
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
    docker("network", "create", *(("-d", "overlay", "--attachable") if overlay else ()), network)
    container = ""
    try:
        hcl = [arg for line in TLS_HCL for arg in ("-hcl", line)]
        # On an overlay network Consul also sees docker_gwbridge's address: bind to the overlay's.
        bind = ("-e", "CONSUL_BIND_INTERFACE=eth0") if overlay else ()
        container = docker(
            "run", "-d", "--network", network, "--network-alias", "consul", "-v", f"{tls}:/tls:ro", *bind,
            "--health-cmd", "consul members", "--health-interval", "2s", "--health-retries", "60",
            CONSUL, "agent", "-server", "-bootstrap-expect=1", "-node=consul", "-client=0.0.0.0",
            "-data-dir=/consul/data", *hcl).stdout.strip()
        wait_healthy(container, 120)
        yield network, ca_file
    finally:
        if container:
            docker("rm", "-f", "-v", container, check=False)
        docker("network", "rm", network, check=False)


@pytest.fixture
def bridge_tls_consul(engine, tmp_path):
    engine.build_statesync_image(SIDECAR_IMAGE)
    yield from _tls_consul(tmp_path, overlay=False)


@pytest.fixture
def overlay_tls_consul(engine, swarm, tmp_path):  # noqa: F811 (swarm: the fixture imported above)
    yield from _tls_consul(tmp_path, overlay=True)


def _the_one_tls_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if TLS_ERROR in line]
    assert len(errors) == 1, stderr[-2000:]
    assert "CONSUL_CACERT" in errors[0] and "Traceback" not in stderr, stderr[-2000:]
    return errors[0]


def _sidecar(tmp_path, stack_file: str, network: str, **env: str) -> Compose:
    work = tmp_path / "compose"
    if not work.exists():
        prepare_stack_dir(work, ("master.yml", "satellite.yml", "icinga-start.sh"))
    return Compose(work / stack_file, project=unique_name("sstlsc"), env={
        "STATESYNC_NETWORK": network, "STATESYNC_IMAGE": SIDECAR_IMAGE,
        "STATESYNC_PREFIX": f"test/{network}", "STATESYNC_CONSUL_ADDR": "https://consul:8501",
        "SATELLITE_NAME": "sattls", "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid), **env})


@pytest.mark.parametrize("stack_file", ["satellite.yml", "master.yml"])
def test_a_compose_sidecar_reaches_a_consul_of_a_private_ca_with_consul_cacert_and_fails_in_one_line_without(
        bridge_tls_consul, tmp_path, stack_file):
    network, ca_file = bridge_tls_consul
    # The variable is the only difference between the two runs; the shell's own is not inherited.
    with _sidecar(tmp_path, stack_file, network, CONSUL_CACERT=str(ca_file)) as trusted:
        ok = trusted.run("statesync", "snapshots", check=False)
        assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
        print("with the CA:", ok.stdout.strip()[-300:])
    with _sidecar(tmp_path, stack_file, network, CONSUL_CACERT="") as untrusted:
        bad = untrusted.run("statesync", "snapshots", check=False)
    assert bad.returncode != 0
    print("without:", bad.returncode, _the_one_tls_error(bad.stderr))


def _swarm_snapshots(tmp_path: Path, network: str, ca_file: Path, with_ca: bool) -> tuple[int, str]:
    """Deploy satellites.yml (and consul-ca.yml when ``with_ca``) as one task that runs
    `statesync snapshots` once; its exit code and logs. Stack, secrets and volume are removed by name."""
    stack = unique_name("sstlssw")
    names = {k: f"{stack}_{k}" for k in ("consul_token", "statesync_key", "consul_ca")}
    files = ["-c", COMPOSE_DIR / "swarm" / "satellites.yml"]
    if with_ca:
        files += ["-c", COMPOSE_DIR / "swarm" / "consul-ca.yml"]
    # The test's override: the network, its secrets' names (global on the engine), one task
    # that runs once, the sidecar's read of Consul instead of the entrypoint's start-up.
    override = tmp_path / f"{stack}.yml"
    override.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"satellite": {
            "networks": ["statesync"], "entrypoint": ["statesync"], "command": ["snapshots"],
            "deploy": {"replicas": 1, "restart_policy": {"condition": "none"}}}},
        "networks": {"statesync": {"external": True, "name": network}},
        "secrets": {k: {"external": True, "name": v} for k, v in names.items() if k != "consul_ca"},
        # Not the shipped icinga-sat-<slot>: the satellites' own test (or a user) may hold that one.
        "volumes": {"icinga-sat": {"name": f"{stack}-sat"}},
    }))
    files += ["-c", override]
    service = f"{stack}_satellite"
    created = []
    try:
        key = tmp_path / f"{stack}.key"
        subprocess.run(statesync_cmd("keygen", "--out", str(key)), check=True, capture_output=True,
                       env=clean_env(), timeout=60)
        for name, payload in (("consul_token", "no-acl-in-this-lab\n"), ("statesync_key", key.read_text()),
                              ("consul_ca", ca_file.read_text())):
            docker("secret", "create", names[name], "-", input=payload)
            created.append(names[name])
        deployed = _run(["/usr/bin/docker", "stack", "deploy", "--resolve-image", "never", *files, stack],
                        env={"SATELLITE_IMAGE": SATELLITE_IMAGE, "CONSUL_CA_SECRET": names["consul_ca"],
                             "STATESYNC_CONSUL_ADDR": "https://consul:8501", "STATESYNC_PREFIX": f"test/{network}"},
                        check=False, timeout=120)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr

        def stopped() -> list[str]:
            ids = docker("ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={service}",
                         "--filter", "status=exited").stdout.split()
            return ids

        wait(lambda: stopped(), 180, "the one task did not run to its end",
             lambda: docker("service", "ps", "--no-trunc", service, check=False).stdout)
        cid = stopped()[0]
        return inspect(cid)["State"]["ExitCode"], container_logs(cid)
    finally:
        docker("stack", "rm", stack, check=False)
        # A stack's task containers go away some seconds after `stack rm`; secrets in use cannot.
        deadline = time.monotonic() + 60
        while docker("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={service}",
                     check=False).stdout.strip() and time.monotonic() < deadline:
            time.sleep(1)
        if created:
            docker("secret", "rm", *created, check=False)
        docker("volume", "rm", "-f", f"{stack}-sat", check=False)


@pytest.mark.usefixtures("satellite_image")
def test_a_swarm_satellite_reaches_a_consul_of_a_private_ca_with_consul_ca_yml_and_fails_in_one_line_without(
        overlay_tls_consul, tmp_path):
    network, ca_file = overlay_tls_consul
    code, logs = _swarm_snapshots(tmp_path, network, ca_file, with_ca=True)
    assert code == 0 and TLS_ERROR not in logs, logs[-2000:]
    print("with consul-ca.yml:", logs.strip()[-300:])
    code, logs = _swarm_snapshots(tmp_path, network, ca_file, with_ca=False)
    assert code != 0
    print("without:", code, _the_one_tls_error(logs))
