"""End to end: an HA master zone of real Icinga 2 (two masters in zone "master", as Icinga's
distributed-monitoring chapter recommends for production) beside a real Consul, each master with
its own ``statesync run --role master`` sidecar under its own node name, both set up alike.

master1 holds the CA (``ca/``); master2 was set up by ``node setup`` against master1 with a
ticket and has no ``ca/``; both hold the zone's config (master2 by Icinga's config sync). The
satellites' parent zone lists both masters. The scenarios build on each other, in order:
1. the zone comes up; a satellite enrols through Consul, asking master2 (which forwards the
   request to master1); only master1's sidecar publishes the CA, stages and signs, master2's
   stands by and says so; master2 learns the satellite's Endpoint by Icinga's config sync and
   the satellite connects to both masters;
2. master2 rebuilt, its volume lost: back with its own certificate, no CA of its own, the same
   published CA, the satellite connected to it again;
3. master1, the CA master, rebuilt: the same CA back; the satellite stays trusted and connected
   to master2 all along (no purge, no restart, no new enrolment) and reconnects to master1;
4. a new satellite enrols while master2 is down; master2, back, learns it and the satellite
   connects to it.
The module runs on Icinga 2 2.13 (the host's) and 2.16 (the sid root; tests/e2e/conftest.py's
``icinga_root``): from 2.15 on a master cuts a satellite with a signed certificate it has no
Endpoint for ("Unknown endpoint ... Aborting JSON-RPC connection"), so there the second master
must have learnt the satellite before it connects. 2.14 behaves as 2.13 here and is left to the
single-master matrix (time budget, README's test section). Each scenario is timed; the times are
printed at the end of the run and written to <pytest basetemp>/e2e-ha-zone-times-<version>.json.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from pathlib import Path

import pytest

from statesync import config
from statesync.config import parse_addr
from statesync.consul.settings import ConsulSettings
from statesync.consul.store import Store
from statesync.enrol import registration
from statesync.pki import cadoc, fingerprint
from statesync.pki.fingerprint import spki_sha256
from statesync.sidecar.wiring import open_repo

from .. import ha_zone_support as ha
from .. import icinga
from ..icinga import MAX_WAIT, Api, Node, sha256_file
from ..scenarios import Scenarios, TimesReport
from ..sidecar import Sidecar
from ..support import free_ports, http_get, wait_for

# The versions this module runs on (a subset of icinga.VERSIONS): see the docstring.
HA_VERSIONS = ("2.13", "2.16")
pytestmark = [pytest.mark.e2e, pytest.mark.consul, pytest.mark.slow,
              pytest.mark.parametrize("icinga_root", HA_VERSIONS, indirect=True, scope="module")]

# What only the sidecar beside the CA may ever log.
SIGNER_EVENTS = ("CA published", "accepted satellites staged", "certificate request signed")
STANDBY_EVENT = "not accepting satellites: "
KEY_EVENT = "the CA key is here now: accepting and signing satellites"


class Zone(Scenarios):
    """The module's two masters, satellites, sidecars and timings."""

    tag = "e2e-ha"

    def __init__(self, consul, base: Path, icinga_root: str = ""):
        super().__init__()
        self.consul, self.base, self.icinga_root = consul, base, icinga_root
        self.version = icinga.icinga_version(icinga_root)
        self.label = "Icinga " + ".".join(map(str, self.version))
        self.session = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.prefix = f"e2e-ha/{self.session}"
        self.api_user, self.api_password = "e2e", secrets.token_hex(12)
        p1, p2, s1, s2 = free_ports(4)
        self.m1 = self.node("master1", ha.ZONE, p1)
        self.m2 = self.node("master2", ha.ZONE, p2)
        self.masters = [self.m1, self.m2]
        self.sat1 = self.node("sat1", "sat1", s1)
        self.sat2 = self.node("sat2", "sat2", s2)
        self.api = {m.cn: Api(m, self.api_user, self.api_password) for m in self.masters}
        self.sidecar: dict[str, Sidecar] = {}
        self.all_sidecars: list[Sidecar] = []
        self.write_secrets()

    def node(self, cn: str, zone: str, port: int) -> Node:
        """A node of this zone's Icinga 2 version, its directories under the zone's base."""
        return Node(cn, zone, str(self.base / cn), port, self.session, icinga_root=self.icinga_root)

    # -- bookkeeping
    def details(self) -> str:
        parts = [n.log_tail(12) for n in (self.m1, self.m2, self.sat1, self.sat2) if n.dir("log").exists()]
        parts += [s.tail(10) for s in self.sidecar.values()]
        return "\n".join(parts)

    # -- sidecars
    def start_sidecar(self, node: Node, role: str, **env: str) -> Sidecar:
        s = self.sidecar_process(node, role, **env)
        self.sidecar[node.cn] = s
        self.all_sidecars.append(s)
        return s

    def start_master_sidecar(self, m: Node) -> Sidecar:
        """The same settings on both masters but for the node's own name, API URL and port."""
        return self.start_sidecar(m, "master", STATESYNC_ENROL_ENABLED="1",
                                  STATESYNC_ENROL_API_URL=f"https://127.0.0.1:{m.api_port}",
                                  STATESYNC_ENROL_API_SERVER_NAME=m.cn,
                                  STATESYNC_ENROL_API_PASSWORD_FILE=str(self.enrol_password_file),
                                  STATESYNC_HTTP_PORT=str(free_ports(1)[0]))

    def start_sat_sidecar(self, sat: Node) -> Sidecar:
        return self.start_sidecar(sat, "satellite", STATESYNC_ENROL_ENABLED="1", STATESYNC_ENROL_ZONE=sat.zone,
                                  STATESYNC_ENROL_PARENT_ZONE=ha.ZONE)

    def healthz(self, m: Node) -> tuple[int, str]:
        return http_get(int(self.sidecar[m.cn].env["STATESYNC_HTTP_PORT"]), "/healthz")

    # -- Consul
    def store(self) -> Store:
        return Store(ConsulSettings(endpoints=(parse_addr(self.consul.addr),)))

    def registration(self, cn: str):
        pair = self.store().get(f"{self.prefix}/satellites/{cn}")
        return registration.decode(pair.value) if pair is not None else None

    def published_ca(self) -> cadoc.PublishedCA | None:
        pair = self.store().get(f"{self.prefix}/ca")
        return cadoc.decode(pair.value) if pair is not None else None

    def snapshot_paths(self, node: Node) -> set[str]:
        cfg = config.load({"prefix": self.prefix, "node": node.cn, "consul.addr": [self.consul.addr],
                           "root": str(node.lib), "encryption_key_file": str(self.key_file)}, env={})
        repo = open_repo(cfg)
        rec = repo.head().record
        return set(repo.manifest(rec).by_path()) if rec is not None else set()

    def wait_snapshot(self, node: Node, paths) -> None:
        wait_for(lambda: set(paths) <= self.snapshot_paths(node), MAX_WAIT,
                 what=f"{node.cn}'s snapshot holding {', '.join(paths)}", details=self.details, step=0.3)

    # -- Icinga 2
    def start_master(self, m: Node) -> None:
        m.start()
        wait_for(self.api[m.cn].up, MAX_WAIT, what=f"{m.cn}'s REST API answering", details=self.details, step=0.1)

    def connected(self, m: Node, cn: str) -> bool | None:
        return self.api[m.cn].connected(cn)

    def wait_connected(self, m: Node, cn: str, timeout: float = MAX_WAIT) -> float:
        start = time.monotonic()
        wait_for(lambda: self.connected(m, cn), timeout, what=f"{m.cn} sees endpoint {cn} connected",
                 details=self.details, step=0.2)
        return time.monotonic() - start

    def destroy(self, node: Node) -> None:
        """Stop ``node`` and its sidecar (which must exit 0), then delete the node's directories (its
        Icinga 2 logs kept beside them, for the reader of a failure)."""
        self.stop(node)
        self.runs += 1
        shutil.copytree(node.dir("log"), self.base / f"{node.cn}-log-before-rebuild-{self.runs}")
        node.wipe()

    def stop(self, node: Node) -> None:
        node.stop()
        assert self.sidecar[node.cn].stop() == 0, self.sidecar[node.cn].tail()

    def signer_events(self, s: Sidecar) -> list[dict]:
        return [e for e in s.events() if e.get("event") in SIGNER_EVENTS]

    def cleanup(self) -> list[str]:
        return self.stop_all(self.all_sidecars, (self.sat2, self.sat1, self.m2, self.m1))


@pytest.fixture(scope="module")
def zone(request, consul, icinga_root, tmp_path_factory):
    icinga.require_nodes(icinga_root)
    base = tmp_path_factory.mktemp("e2e-ha-zone")
    z = Zone(consul, base, icinga_root)
    times_path = tmp_path_factory.getbasetemp() / f"e2e-ha-zone-times-{'.'.join(map(str, z.version[:2]))}.json"
    request.config.pluginmanager.register(TimesReport(z, times_path, "Icinga 2 HA master zone times"), f"e2e-ha-zone-times-{z.session}")
    try:
        yield z
    finally:
        problems = z.cleanup()
        times_path.write_text(json.dumps(z.times, indent=2))
        assert not problems, f"cleanup: {problems}"


# -- the scenarios, in order ----------------------------------------------------------------

def test_an_ha_zone_has_one_signer_and_a_satellite_enrolled_through_the_second_master_connects_to_both(zone):
    """Scenario 1 (about 30 s: two masters set up, a satellite enrolled; Icinga 2 retries a pending
    request and a connection every 10 s)."""
    z = zone
    with z.scenario("1 HA zone up, satellite enrolled"):
        t0 = time.monotonic()
        # Compose order on each master: its sidecar first (nothing to restore), Icinga 2 once it is ready.
        s1 = z.start_master_sidecar(z.m1)
        assert s1.wait_ready(MAX_WAIT)["action"] == "nothing-to-restore"
        ha.provision_first_master(z.m1, z.masters, z.api_user, z.api_password, z.enrol_password)
        z.start_master(z.m1)
        ca_pem = z.m1.ca_cert().read_bytes()
        ca = spki_sha256(ca_pem)
        doc = wait_for(lambda: (d := z.published_ca()) is not None and d.spki_sha256 == ca and d, MAX_WAIT,
                       what="master1's sidecar publishing its CA", details=z.details, step=0.1)
        assert doc.node == z.m1.cn
        t_first = time.monotonic()

        s2 = z.start_master_sidecar(z.m2)
        assert s2.wait_ready(MAX_WAIT)["action"] == "nothing-to-restore"
        ha.provision_second_master(z.m2, z.m1, z.masters, z.api_user, z.api_password, z.enrol_password)
        assert not (z.m2.lib / "ca").exists(), "node setup against the first master made a CA on the second"
        m2_cert = (z.m2.lib / "certs/master2.crt").read_bytes()
        assert fingerprint.issued_by(m2_cert, ca_pem)
        z.start_master(z.m2)
        z.wait_connected(z.m1, z.m2.cn)
        t_second = time.monotonic()

        # The satellite asks master2, which has no CA key: Icinga forwards the request to master1.
        z.start_sat_sidecar(z.sat1)
        assert z.sidecar["sat1"].wait_ready(MAX_WAIT)["action"] == "nothing-to-restore"
        ha.pending_satellite(z.sat1, z.masters, parent=z.m2)
        zones = ha.zone_endpoints(z.sat1)
        assert '"master1"' in zones and '"master2"' in zones, zones
        t_request = time.monotonic()
        z.sat1.start()
        wait_for(lambda: z.registration("sat1"), MAX_WAIT, what="sat1's registration", details=z.details, step=0.1)
        z.wait_connected(z.m1, "sat1")
        t_m1 = time.monotonic()
        # master2 learns sat1's Endpoint from master1's config sync (the package is in the zone's config),
        # and sat1, holding a signed certificate now, connects to it as well.
        z.wait_connected(z.m2, "sat1")
        t_m2 = time.monotonic()

        cert = (z.sat1.lib / "certs/sat1.crt").read_bytes()
        assert fingerprint.issued_by(cert, ca_pem)
        assert 'object Endpoint "sat1"' in ha.synced_package(z.m2), "master2 runs sat1's Endpoint from elsewhere"
        assert not (z.m2.lib / "api/packages/statesync-satellites").exists(), "master2's sidecar staged a package"

        # One signer: master1's sidecar published, staged and signed; master2's stood by and said so.
        events = {e["event"] for e in z.signer_events(s1)}
        assert set(SIGNER_EVENTS) <= events, s1.tail(30)
        assert z.signer_events(s2) == [], s2.tail(30)
        [standby] = [e for e in s2.events() if e["event"].startswith(STANDBY_EVENT)]
        assert "ca/ca.key" in standby["event"], standby
        # master1's sidecar started before node setup made the CA: it stood by until the key was there.
        # (Had node setup been quicker than the first pass, it would not have stood by at all.)
        roles = [e["event"] for e in s1.events() if e["event"].startswith((STANDBY_EVENT, KEY_EVENT))]
        assert not roles or (roles[-1] == KEY_EVENT and KEY_EVENT not in roles[:-1]), roles
        status, body = z.healthz(z.m2)
        assert status == 200 and "standing by" in body, body
        status, body = z.healthz(z.m1)
        assert status == 200 and "standing by" not in body, body
        assert z.published_ca().node == z.m1.cn
        z.wait_snapshot(z.m2, ("certs/master2.crt", "certs/master2.key", "certs/ca.crt",
                               "api/zones/master/statesync-satellites/statesync-satellites.conf"))
        z.wait_snapshot(z.m1, ("ca/ca.crt", "ca/ca.key", "api/packages/statesync-satellites/active-stage"))
        z.wait_snapshot(z.sat1, ("certs/sat1.crt", "certs/sat1.key"))
        z.record("scenario 1 (HA zone up, satellite enrolled through master2)",
                 first_master_up=t_first - t0, second_master_set_up_and_connected=t_second - t_first,
                 satellite_start_to_connected_master1=t_m1 - t_request,
                 master1_to_master2_connected=t_m2 - t_m1, total=t_m2 - t0)


def test_the_second_master_rebuilt_comes_back_with_its_own_certificate_and_no_ca(zone):
    """Scenario 2."""
    z = zone
    with z.scenario("2 second master rebuilt"):
        cert = sha256_file(z.m2.lib / "certs/master2.crt")
        key = sha256_file(z.m2.lib / "certs/master2.key")
        published = z.published_ca()
        ca_key = sha256_file(z.m1.lib / "ca/ca.key")

        z.destroy(z.m2)
        wait_for(lambda: z.connected(z.m1, z.m2.cn) is False, MAX_WAIT, what="master1 sees master2 gone",
                 details=z.details, step=0.2)
        t0 = time.monotonic()
        s2 = z.start_master_sidecar(z.m2)
        marker = s2.wait_ready(MAX_WAIT)
        t_restored = time.monotonic()
        assert marker["action"] == "restored", marker
        ha.restore_config(z.m2)  # config management's /etc/icinga2: no node setup, no new key
        z.start_master(z.m2)
        t_started = time.monotonic()
        z.wait_connected(z.m1, z.m2.cn)
        t_zone = time.monotonic()
        z.wait_connected(z.m2, "sat1")
        t_sat = time.monotonic()

        assert sha256_file(z.m2.lib / "certs/master2.crt") == cert and sha256_file(z.m2.lib / "certs/master2.key") == key
        assert not (z.m2.lib / "ca").exists()
        assert z.published_ca() == published and sha256_file(z.m1.lib / "ca/ca.key") == ca_key
        assert z.signer_events(s2) == [] and [e for e in s2.events() if e["event"].startswith(STANDBY_EVENT)]
        assert not (z.sat1.lib / ".statesync-quarantine").exists()
        z.record("scenario 2 (second master rebuilt, volume lost)",
                 restore_until_ready=t_restored - t0, setup_and_start=t_started - t_restored,
                 start_to_zone_connected=t_zone - t_started, start_to_satellite_connected=t_sat - t_started,
                 total=t_sat - t0)


def test_the_ca_master_rebuilt_brings_back_the_ca_and_the_satellite_stays_trusted_and_connected(zone):
    """Scenario 3."""
    z = zone
    with z.scenario("3 CA master rebuilt"):
        ca_key = sha256_file(z.m1.lib / "ca/ca.key")
        ca = spki_sha256(z.m1.ca_cert().read_bytes())
        sat_certs = {p: sha256_file(z.sat1.lib / p) for p in ("certs/ca.crt", "certs/sat1.crt", "certs/sat1.key")}
        registered = z.registration("sat1")
        sat_pid = z.sat1.pidfile_pid()
        published = z.published_ca()

        z.destroy(z.m1)
        wait_for(lambda: z.connected(z.m2, z.m1.cn) is False, MAX_WAIT, what="master2 sees master1 gone",
                 details=z.details, step=0.2)
        assert z.connected(z.m2, "sat1"), "the satellite lost master2 while master1 was away"
        t0 = time.monotonic()
        s1 = z.start_master_sidecar(z.m1)
        marker = s1.wait_ready(MAX_WAIT)
        t_restored = time.monotonic()
        assert marker["action"] == "restored", marker
        assert sha256_file(z.m1.lib / "ca/ca.key") == ca_key
        ha.provision_first_master(z.m1, z.masters, z.api_user, z.api_password, z.enrol_password)
        z.start_master(z.m1)
        t_started = time.monotonic()
        z.wait_connected(z.m1, z.m2.cn)
        t_zone = time.monotonic()
        z.wait_connected(z.m1, "sat1")
        t_sat = time.monotonic()

        assert spki_sha256(z.m1.ca_cert().read_bytes()) == ca and sha256_file(z.m1.lib / "ca/ca.key") == ca_key
        assert {p: sha256_file(z.sat1.lib / p) for p in sat_certs} == sat_certs
        assert not (z.sat1.lib / ".statesync-quarantine").exists(), "the guard purged on a restored, unchanged CA"
        assert z.sat1.pidfile_pid() == sat_pid and z.registration("sat1") == registered
        assert z.published_ca().spki_sha256 == published.spki_sha256 and z.published_ca().node == z.m1.cn
        z.wait_connected(z.m2, "sat1")
        # The restored master1 has its key before its acceptor starts: it never stood by.
        assert not [e for e in s1.events() if e["event"].startswith(STANDBY_EVENT)], s1.tail(30)
        z.record("scenario 3 (CA master rebuilt, volume lost)",
                 restore_until_ready=t_restored - t0, setup_and_start=t_started - t_restored,
                 start_to_zone_connected=t_zone - t_started, start_to_satellite_connected=t_sat - t_started,
                 total=t_sat - t0)


def test_a_satellite_enrols_while_the_second_master_is_down_and_connects_to_it_once_it_is_back(zone):
    """Scenario 4 (about 30 s: an enrolment, then master2's start, config sync and reload, each
    paced by Icinga 2's 10 s retries)."""
    z = zone
    with z.scenario("4 enrolment while master2 is down"):
        z.stop(z.m2)
        wait_for(lambda: z.connected(z.m1, z.m2.cn) is False, MAX_WAIT, what="master1 sees master2 gone",
                 details=z.details, step=0.2)
        t0 = time.monotonic()
        z.start_sat_sidecar(z.sat2)
        assert z.sidecar["sat2"].wait_ready(MAX_WAIT)["action"] == "nothing-to-restore"
        ha.pending_satellite(z.sat2, z.masters, parent=z.m1)
        z.sat2.start()
        z.wait_connected(z.m1, "sat2")
        t_enrolled = time.monotonic()
        cert = (z.sat2.lib / "certs/sat2.crt").read_bytes()
        assert fingerprint.issued_by(cert, z.m1.ca_cert().read_bytes())

        # master2 back (its own volume, not rebuilt): its sync from master1 brings sat2's Endpoint.
        t1 = time.monotonic()
        s2 = z.start_master_sidecar(z.m2)
        assert s2.wait_ready(MAX_WAIT)["action"] in ("matched", "no-ca"), s2.tail()
        z.start_master(z.m2)
        z.wait_connected(z.m2, "sat2")
        t_back = time.monotonic()
        assert 'object Endpoint "sat2"' in ha.synced_package(z.m2)
        z.wait_connected(z.m2, "sat1")  # master2 reloaded for the sync: sat1 is back at its next retry
        z.wait_connected(z.m1, "sat1")
        assert z.signer_events(s2) == []
        z.record("scenario 4 (satellite enrolled while master2 was down)",
                 satellite_start_to_connected_master1=t_enrolled - t0,
                 master2_start_to_satellite_connected=t_back - t1, total=t_back - t0)
