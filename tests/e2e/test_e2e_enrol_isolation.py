"""End to end (issue 23): one satellite can never hurt another through enrolment.

A real master (Icinga 2 and its sidecar) and a real satellite sat1, enrolled through Consul and
connected, shared by every case of this module (tests/icinga.py, tests/e2e/test_e2e_icinga.py). Each
case is a second satellite trying something with the one key its token may write,
``<prefix>/satellites/<its cn>`` (config/acl/satellite.hcl), and, where it needs one, a real
pending request made by ``node setup`` without a ticket. After each: sat1 is still in the active
package, alone in its zone, and connected.

Slow (about two minutes): one master and sat1 for all cases, and each case waits for the passes
and reloads of the real master. Every wait is bounded by MAX_WAIT.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest

from statesync import config
from statesync.enrol import registration
from statesync.pki.fingerprint import spki_sha256

from .. import icinga
from ..icinga import MAX_WAIT, Node
from ..support import REPO, http_get, statesync_cmd, wait_for
from .test_e2e_icinga import Cluster, _der_sha256

pytestmark = [pytest.mark.e2e, pytest.mark.consul, pytest.mark.slow]

# sat1's own zone, and an HA zone the operator allows for sat1's partners sat1-*.
ZONES = "sat1=sat1,sat1-*=sat1"


@pytest.fixture(scope="module")
def cluster(consul, tmp_path_factory, icinga_root):
    """Once per Icinga 2 version of the matrix (tests/e2e/conftest.py)."""
    icinga.require_nodes(icinga_root)
    base = tmp_path_factory.mktemp("e2e-isolation")
    c = Cluster(consul, base, icinga_root)
    c.sat = c.node("sat1", "sat1", c.sat.api_port)
    icinga.write_spec(c.spec, c.sat, c.master)
    env = {"STATESYNC_ENROL_INTERVAL": "5"}
    # The same module runs against the code before issue 23 (the regression record), which has no enrol.zones.
    if "STATESYNC_ENROL_ZONES" in config.KNOWN_VARIABLES:
        env["STATESYNC_ENROL_ZONES"] = ZONES
    try:
        c.enrol_and_connect(**env)
        yield c
    finally:
        problems = c.cleanup()
        assert not problems, f"cleanup: {problems}"


# -- helpers ---------------------------------------------------------------------------------

def _port(c) -> int:
    return int(c.master_sidecar.env["STATESYNC_HTTP_PORT"])


def _put(c, cn: str, zone: str, key: str, request: str) -> None:
    """What the intruder's token allows: write its own registration (or a spoofed one of its own)."""
    ca = spki_sha256(c.master.ca_cert().read_bytes())
    c.store().put(f"{c.prefix}/satellites/{cn}", registration.encode(registration.Registration(
        cn=cn, zone=zone, parent_zone="master", key_sha256=key, request_sha256=request, ca_spki_sha256=ca,
        node=cn, time=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()))))


def _drop(c, *cns: str) -> None:
    for cn in cns:
        c.store().delete(f"{c.prefix}/satellites/{cn}")


def _requested(c, cn: str) -> tuple[Node, str, str]:
    """A real pending request for ``cn`` on the master: (node, key sha256, request fingerprint)."""
    node = c.node(cn, cn)
    icinga.pending_satellite(node, c.master)
    cert = (node.lib / f"certs/{cn}.crt").read_bytes()
    return node, spki_sha256(cert), _der_sha256(cert)


def _refusal(c, cn: str) -> str | None:
    """The reason the master's sidecar logged for refusing ``cn``, once it has."""
    for e in c.master_sidecar.events("registration refused"):
        if e.get("satellite") == registration.shown(cn):
            return e["reason"]
    return None


def _zone_members(c, zone: str) -> list[str] | None:
    try:
        return c.api.get(f"/v1/objects/zones/{zone}")["results"][0]["attrs"]["endpoints"]
    except Exception:  # 404, or the API reloading
        return None


def _signed(c, key: str) -> bool:
    return any(d.get("cert_response") and spki_sha256(d["cert_request"].encode()) == key
               for d in icinga.request_files(c.master).values())


def _listing(c) -> dict[str, dict]:
    proc = subprocess.run(statesync_cmd("satellites", "--json"), env=c.master_sidecar.env, cwd=REPO,
                          capture_output=True, text=True, timeout=MAX_WAIT)
    assert proc.returncode == 0, proc.stderr
    return {r["cn"]: r for r in json.loads(proc.stdout)}


def _settle(c) -> None:
    """Let a few more passes run (each would have staged what it decided by then)."""
    time.sleep(4)


def _sat1_untouched(c) -> None:
    text = c.package_text()
    assert 'object Endpoint "sat1"' in text and 'object Zone "sat1"' in text, text
    wait_for(lambda: _zone_members(c, "sat1") is not None, MAX_WAIT, what="zone sat1 readable", step=0.2)
    assert _zone_members(c, "sat1")[0] == "sat1"
    # Accepting anyone reloads Icinga, which drops every cluster connection for a moment.
    c.wait_connected()


# -- the cases, each from a connected sat1 ---------------------------------------------------------

def test_an_unproven_case_twin_of_sat1s_zone_never_unenrols_sat1_even_after_its_request_aged_out(cluster):
    c = cluster
    _sat1_untouched(c)
    # Icinga deletes request files after 7 days: sat1 stays only by what the package accepted.
    for f in (c.master.lib / "certificate-requests").glob("*.json"):
        f.unlink()
    _put(c, "sat2", "SAT1", hashlib.sha256(b"no key").hexdigest(), hashlib.sha256(b"no request").hexdigest())
    wait_for(lambda: _refusal(c, "sat2"), MAX_WAIT, what="the case twin refused",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    _settle(c)
    _sat1_untouched(c)
    assert "not authorised" in _refusal(c, "sat2")
    _drop(c, "sat2")


def test_a_satellite_cannot_join_sat1s_zone_with_its_own_real_request(cluster):
    c = cluster
    _, key, request = _requested(c, "sat3")
    _put(c, "sat3", "sat1", key, request)
    wait_for(lambda: _refusal(c, "sat3"), MAX_WAIT, what="joining sat1's zone refused",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    _settle(c)
    _sat1_untouched(c)
    assert _zone_members(c, "sat1") == ["sat1"] and "sat3" not in c.package_text()
    assert "zone 'sat1' is not authorised" in _refusal(c, "sat3") and not _signed(c, key)
    _drop(c, "sat3")


def test_the_listing_gives_a_spoofed_key_hash_the_acceptors_verdict(cluster):
    c = cluster
    _, key, request = _requested(c, "sat4")
    _put(c, "sat4", "sat4", hashlib.sha256(b"not sat4's key").hexdigest(), request)
    reason = wait_for(lambda: _refusal(c, "sat4"), MAX_WAIT, what="the spoofed key hash refused",
                      details=lambda: c.master_sidecar.tail(20), step=0.2)
    row = _listing(c)["sat4"]
    assert (row["state"], row["detail"]) == ("rejected", reason), row
    assert not _signed(c, key)
    _sat1_untouched(c)
    assert _listing(c)["sat1"]["state"] == "connected"
    _drop(c, "sat4")


def test_a_malformed_request_file_is_refused_alone_and_the_others_are_signed(cluster):
    c = cluster
    bad = c.master.lib / "certificate-requests" / ("0" * 64 + ".json")
    bad.write_bytes(b'{"cert_request": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    _, key, request = _requested(c, "sat5")
    _put(c, "sat5", "sat5", key, request)
    wait_for(lambda: _signed(c, key), MAX_WAIT, what="sat5 signed beside a malformed request file",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    assert http_get(_port(c), "/healthz")[0] == 200
    assert [e for e in c.master_sidecar.events("certificate request refused") if e.get("request") == "0" * 64]
    _sat1_untouched(c)
    bad.unlink()
    _drop(c, "sat5")


def test_an_enrolled_satellite_cannot_move_into_sat1s_zone_without_a_new_request(cluster):
    c = cluster
    _, key, request = _requested(c, "sat8")
    _put(c, "sat8", "sat8", key, request)
    wait_for(lambda: _signed(c, key) and 'object Endpoint "sat8"' in c.package_text(), MAX_WAIT,
             what="sat8 enrolled", details=lambda: c.master_sidecar.tail(20), step=0.2)
    _put(c, "sat8", "sat1", key, request)  # the same key: no new request
    wait_for(lambda: _refusal(c, "sat8"), MAX_WAIT, what="the move refused",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    _settle(c)
    _sat1_untouched(c)
    assert _zone_members(c, "sat1") == ["sat1"]
    _drop(c, "sat8")


def test_a_newcomer_never_evicts_a_member_of_a_full_zone(cluster):
    c = cluster
    _, key_b, request_b = _requested(c, "sat1-b")
    _put(c, "sat1-b", "sat1", key_b, request_b)
    wait_for(lambda: _zone_members(c, "sat1") == ["sat1", "sat1-b"], MAX_WAIT, what="sat1-b beside sat1",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    _, key_a, request_a = _requested(c, "sat1-a")  # sorts before sat1-b
    _put(c, "sat1-a", "sat1", key_a, request_a)
    wait_for(lambda: _refusal(c, "sat1-a"), MAX_WAIT, what="the third endpoint refused",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    _settle(c)
    assert "already has 2 endpoints ('sat1', 'sat1-b')" in _refusal(c, "sat1-a")
    assert _zone_members(c, "sat1") == ["sat1", "sat1-b"] and not _signed(c, key_a)
    _sat1_untouched(c)
    _drop(c, "sat1-a", "sat1-b")
    wait_for(lambda: _zone_members(c, "sat1") == ["sat1"], MAX_WAIT, what="sat1 alone again", step=0.2)


def test_a_registration_icingas_check_fails_with_is_left_out_and_the_others_get_in(cluster):
    c = cluster
    # Config Icinga compiles only once a zone sat6 exists: left-over cluster config for that zone.
    left = c.master.lib / "api/zones/sat6/_etc"
    left.mkdir(parents=True)
    (left / "left-over.conf").write_text('object Host "left-over" { }\n')  # no check_command: invalid
    subprocess.run(["chown", "-R", "nagios:nagios", str(c.master.lib / "api/zones")], check=True)
    _, key6, request6 = _requested(c, "sat6")
    _, key7, request7 = _requested(c, "sat7")
    _put(c, "sat6", "sat6", key6, request6)
    _put(c, "sat7", "sat7", key7, request7)
    wait_for(lambda: _signed(c, key7), MAX_WAIT, what="sat7 signed while sat6 breaks the check",
             details=lambda: c.master_sidecar.tail(30), step=0.2)
    status, body = http_get(_port(c), "/healthz")
    assert status == 503 and "'sat6'" in body and "config check" in body, (status, body)
    [event] = [e for e in c.master_sidecar.events("registration left out") if e.get("satellite") == "'sat6'"]
    assert "check_command" in event["reason"], event
    row = _listing(c)["sat6"]
    assert row["state"] == "rejected" and "left out" in row["detail"] and "check_command" in row["detail"], row
    assert 'object Endpoint "sat7"' in c.package_text() and "sat6" not in c.package_text()
    assert not _signed(c, key6)
    _sat1_untouched(c)
    _drop(c, "sat6")
    wait_for(lambda: http_get(_port(c), "/healthz")[0] == 200, MAX_WAIT, what="/healthz healthy again",
             details=lambda: c.master_sidecar.tail(20), step=0.2)
    assert "sat6" not in _listing(c)
    _drop(c, "sat7")
    _sat1_untouched(c)
