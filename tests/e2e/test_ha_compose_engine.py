"""An HA master zone from compose/master.yml as shipped, on a real Docker Engine with the 2.16
image's stand-in: compose/README.md's "An HA master zone", step by step.

The first master is master.yml as it is; the second is master.yml again, under its own project
and node name, with the node setup variables master.yml offers (a ticket from the first master,
the first master's certificate pinned). HA_MASTERS names the zone's masters to both and to the
satellite, which enrols through Consul as any other: icinga-start.sh writes each one's zones.conf.
The scenarios build on each other:
1. the zone comes up: the first master is given HA_MASTERS once the second is there; only the
   CA master's sidecar publishes and signs, the second stands by and is healthy; the satellite
   connects to both masters;
2. the second master's volume is lost: `up` brings back its own certificate and the zone's
   zones.conf, with no CA of its own and no node setup, and the satellite connects to it again;
3. the CA master's volume is lost: `up` brings back the CA; the satellite is never quarantined,
   restarted or enrolled again, and connects to it again.
tests/e2e/test_ha_zone.py runs the same zone on Icinga 2 2.13 and 2.16 without containers,
enrolment while the second master is down included. Slow (minutes): three stacks of real
Icinga 2 and two volume losses.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ..compose_support import PhaseTimes, api, prepare_stack_dir, sh, wait
from ..engine import CONSUL, ICINGA_IMAGES, Compose, container_logs, docker, inspect, unique_name, wait_healthy

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SIDECAR_IMAGE = "statesync:test"
IMAGE = ICINGA_IMAGES["2.16"]
M1, M2 = "icinga-master", "icinga-master2"
SIGNER_EVENTS = ("CA published", "accepted satellites staged", "certificate request signed")
STANDBY_EVENT = "not accepting satellites: "
FINGERPRINT = "openssl x509 -noout -fingerprint -sha256 -in "

HA_MASTERS = f"{M1} {M2}"
# What icinga-start.sh writes from it on a master, and below it on a satellite.
MASTERS_ZONE = [f'object Endpoint "{M1}" {{ host = "{M1}"; port = "5665" }}',
                f'object Endpoint "{M2}" {{ host = "{M2}"; port = "5665" }}',
                f'object Zone "master" {{ endpoints = [ "{M1}", "{M2}" ] }}']


class Zone:
    """The module's Consul stack, both master stacks and the satellite's, in one stacks' directory."""

    def __init__(self, base: Path):
        self.dir = base / "compose"
        prepare_stack_dir(self.dir, ("consul.yml", "master.yml", "satellite.yml", "icinga-start.sh"))
        self.network = unique_name("ssnet")
        self.env = {
            "STATESYNC_NETWORK": self.network, "CONSUL_IMAGE": CONSUL, "ICINGA_IMAGE": IMAGE.tag,
            "STATESYNC_IMAGE": SIDECAR_IMAGE, "STATESYNC_PREFIX": f"test/{self.network}",
            "ICINGA_API_PUBLISH": "127.0.0.1::5665", "MASTER_NAME": M1,
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        }
        self.consul = self.stack("consul.yml", "hazconsul")
        self.m1 = self.stack("master.yml", "hazm1")
        self.m2: Compose | None = None
        self.sat: Compose | None = None
        self.times = PhaseTimes("HA master zone from compose/master.yml on a real engine: phase times")

    def stack(self, file: str, role: str, **env: str) -> Compose:
        return Compose(self.dir / file, env={**self.env, **env}, project=unique_name(role))

    def stacks(self) -> list[Compose]:
        return [s for s in (self.sat, self.m2, self.m1, self.consul) if s is not None]

    def logs(self) -> str:
        return "".join(s.logs() for s in self.stacks())


def _published_matches_local(stack: Compose) -> bool:
    return stack.exec("statesync", "statesync", "check-ca", check=False, timeout=60).returncode == 0


def _zones_conf(stack: Compose) -> list[str]:
    return sh(stack, "icinga2", "cat /etc/icinga2/zones.conf").splitlines()


def _user(master: Compose) -> str:
    # The second master has no root API user (node setup makes one with --master only); the
    # sidecar's, which icinga-start.sh writes on every master, may query Endpoints.
    return "statesync" if master.env.get("MASTER_NAME") == M2 else "root"


def _api_up(master: Compose) -> None:
    api(master, f"/v1/objects/endpoints/{master.env['MASTER_NAME']}", "HTTP200", user=_user(master))


def _connected(master: Compose, endpoint: str, tries: int = 120) -> None:
    api(master, f"/v1/objects/endpoints/{endpoint}", '"connected":true', tries=tries, user=_user(master))


def _sidecar_log(stack: Compose) -> str:
    return container_logs(stack.container_id("statesync"))


def _lose_volume_and_come_back(stack: Compose, phases: dict, name: str) -> None:
    t0 = time.monotonic()
    stack.compose("stop", "-t", "30", timeout=120)  # the sidecar's last commit on SIGTERM
    stack.down(volumes=True)
    stack.up(wait=None)
    _api_up(stack)
    phases[f"{name}_down_v_to_api"] = time.monotonic() - t0
    assert IMAGE.node_setup_log not in container_logs(stack.container_id("icinga2"))


@pytest.fixture(scope="module")
def zone(engine, tmp_path_factory, request):
    engine.build_statesync_image(SIDECAR_IMAGE)
    zone = Zone(tmp_path_factory.mktemp("ha-compose-engine"))
    request.config.pluginmanager.register(zone.times, f"ha-compose-engine-times-{id(zone)}")
    try:
        zone.consul.up(wait=120)
        yield zone
    finally:
        for stack in zone.stacks():
            stack.cleanup()


def test_the_zone_comes_up_with_one_signer_and_a_satellite_connected_to_both_masters(zone):
    phases = zone.times.scenario("2.16: zone up, satellite enrolled, connected to both")
    t0 = time.monotonic()
    zone.m1.up(wait=None)
    api(zone.m1, "/v1/status", "HTTP200")
    wait(lambda: _published_matches_local(zone.m1), 120, "the CA master's sidecar did not publish the CA",
         zone.logs)
    phases["m1_up_to_published"] = time.monotonic() - t0

    # The second master: a ticket from the first and its certificate to pin, then master.yml again.
    ticket = sh(zone.m1, "icinga2", f"icinga2 pki ticket --cn {M2}").strip()
    m1_cert = sh(zone.m1, "icinga2", f"cat /var/lib/icinga2/certs/{M1}.crt")
    zone.m2 = zone.stack("master.yml", "hazm2", MASTER_NAME=M2, HA_MASTERS=HA_MASTERS,
                         ICINGA_MASTER="", ICINGA_ZONE="master",
                         ICINGA_ENDPOINT=f"{M1},{M1},5665", ICINGA_PARENT_HOST=f"{M1},5665",
                         ICINGA_PARENT_ZONE="master", ICINGA_ACCEPT_CONFIG="1", ICINGA_ACCEPT_COMMANDS="1",
                         ICINGA_TICKET=ticket, ICINGA_TRUSTEDCERT=m1_cert)
    t1 = time.monotonic()
    zone.m2.up(wait=None)
    _api_up(zone.m2)
    phases["m2_up_to_api"] = time.monotonic() - t1
    log = container_logs(zone.m2.container_id("icinga2"))
    # node setup wrote zone "master" twice (its own and its parent's), which Icinga 2 refuses
    # to load; the wrapper replaced the file before Icinga 2 read it.
    assert IMAGE.node_setup_log in log and "wrote /etc/icinga2/zones.conf" in log
    assert "re-defined" not in log
    # Signed by the CA master at once with the ticket; no CA of its own.
    sh(zone.m2, "icinga2", f"cd /var/lib/icinga2/certs && test ! -e ../ca/ca.key"
                            f" && openssl verify -CAfile ca.crt {M2}.crt")

    # The first master learns the zone: HA_MASTERS, and `up -d` creates its icinga2 again.
    t2 = time.monotonic()
    zone.m1.env["HA_MASTERS"] = HA_MASTERS
    zone.m1.up(wait=None)
    api(zone.m1, "/v1/status", "HTTP200")
    assert _zones_conf(zone.m1)[1:4] == _zones_conf(zone.m2)[1:4] == MASTERS_ZONE
    _connected(zone.m1, M2)
    _connected(zone.m2, M1)
    phases["zones_conf_to_masters_connected"] = time.monotonic() - t2
    # The second master's sidecar stands by, says so and stays healthy; only the first signs.
    wait_healthy(zone.m2.container_id("statesync"), 120)
    wait(lambda: STANDBY_EVENT in _sidecar_log(zone.m2), 60, "the second sidecar did not say it stands by",
         zone.logs)
    assert not [e for e in SIGNER_EVENTS if e in _sidecar_log(zone.m2)]

    sat = unique_name("sat")
    zone.sat = zone.stack("satellite.yml", "hazsat", SATELLITE_NAME=sat, MASTER_HOST=M1, HA_MASTERS=HA_MASTERS)
    t3 = time.monotonic()
    zone.sat.up(wait=None)
    _connected(zone.m1, sat)
    phases["satellite_up_to_connected_m1"] = time.monotonic() - t3
    log = _sidecar_log(zone.m1)
    assert "accepted satellites staged" in log and "certificate request signed" in log
    assert not [e for e in SIGNER_EVENTS if e in _sidecar_log(zone.m2)]
    # The second master learnt the satellite from the first (config sync), and the satellite
    # knows both masters.
    _connected(zone.m2, sat)
    phases["satellite_up_to_connected_both"] = time.monotonic() - t3
    assert _zones_conf(zone.sat)[1:6] == [*MASTERS_ZONE, f'object Endpoint "{sat}" {{ }}',
                                          f'object Zone "{sat}" {{ endpoints = [ "{sat}" ]; parent = "master" }}']
    zone.sat_name = sat


def test_the_second_master_comes_back_from_a_lost_volume_with_its_own_certificate_and_no_ca(zone):
    assert zone.m2 is not None and zone.sat is not None, "needs the zone of the first scenario"
    phases = zone.times.scenario("2.16: second master's volume lost")
    identity = (f"{FINGERPRINT}/var/lib/icinga2/certs/{M2}.crt; {FINGERPRINT}/var/lib/icinga2/certs/ca.crt;"
                " sha256sum /etc/icinga2/zones.conf")
    before = sh(zone.m2, "icinga2", identity)
    _lose_volume_and_come_back(zone.m2, phases, "m2")
    assert sh(zone.m2, "icinga2", identity) == before, "certificate, CA or zones.conf differ"
    sh(zone.m2, "icinga2", "test ! -e /var/lib/icinga2/ca")
    t0 = time.monotonic()
    _connected(zone.m2, M1)
    _connected(zone.m2, zone.sat_name)
    phases["m2_api_to_satellite_connected"] = time.monotonic() - t0
    assert _published_matches_local(zone.m1)
    assert not [e for e in SIGNER_EVENTS if e in _sidecar_log(zone.m2)]


def test_the_ca_master_comes_back_from_a_lost_volume_and_the_satellite_stays_trusted(zone):
    assert zone.m2 is not None and zone.sat is not None, "needs the zone of the first scenario"
    phases = zone.times.scenario("2.16: CA master's volume lost")
    ca = sh(zone.m1, "icinga2", f"{FINGERPRINT}/var/lib/icinga2/ca/ca.crt")
    sat_icinga = zone.sat.container_id("icinga2")
    guard_before = _sidecar_log(zone.sat)
    _lose_volume_and_come_back(zone.m1, phases, "m1")
    assert sh(zone.m1, "icinga2", f"{FINGERPRINT}/var/lib/icinga2/ca/ca.crt") == ca
    t0 = time.monotonic()
    _connected(zone.m1, zone.sat_name)
    _connected(zone.m1, M2)
    phases["m1_api_to_satellite_connected"] = time.monotonic() - t0
    assert _published_matches_local(zone.m1)
    guard = _sidecar_log(zone.sat)
    for event in ("certificates quarantined", "restart triggered"):
        assert guard.count(event) == guard_before.count(event), guard[-3000:]
    assert zone.sat.container_id("icinga2") == sat_icinga
    assert inspect(sat_icinga)["RestartCount"] == 0


@pytest.mark.parametrize("masters", ['icinga-master "x', "icinga-master,host,56x", "icinga-* x", " "])
def test_a_bad_ha_masters_stops_icinga_in_one_line_and_leaves_zones_conf_as_it_was(engine, tmp_path, masters):
    wrapper = f"{Path(__file__).resolve().parents[2] / 'compose/icinga-start.sh'}:/statesync/icinga-start.sh:ro"
    volume = unique_name("ssvol")
    try:
        docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", IMAGE.tag, "-c",
               "touch /data/.statesync-ready; sha256sum /etc/icinga2/zones.conf > /data/before")
        run = docker("run", "--rm", "-v", f"{volume}:/data", "-v", wrapper, "-e", f"STATESYNC_HA_MASTERS={masters}",
                     "--entrypoint", "/bin/sh", IMAGE.tag, "/statesync/icinga-start.sh",
                     "sh", "-c", "echo started", check=False, timeout=120)
        assert run.returncode == 1 and "started" not in run.stdout, run.stdout + run.stderr
        lines = [line for line in run.stderr.splitlines() if "icinga-start:" in line]
        assert len(lines) == 1 and "STATESYNC_HA_MASTERS must be" in lines[0], run.stderr
        left = docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", IMAGE.tag, "-c",
                      "sha256sum -c /data/before && ls /etc/icinga2/", check=False)
        assert left.returncode == 0 and "zones.conf.tmp" not in left.stdout, left.stdout + left.stderr
    finally:
        docker("volume", "rm", "-f", volume, check=False)
