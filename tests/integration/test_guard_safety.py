"""The satellite CA guard in-process against the real Consul: when it purges, and every
safety rule under which it must not."""
from __future__ import annotations

import json
import signal
import sys
import time

import pytest
import structlog

from statesync.consul.store import Store
from statesync.guard import triggers
from statesync.guard.ca_watch import Guard
from statesync.guard.logic import Verdict
from statesync.guard.quarantine import DECISION_FILE
from statesync.pki import fingerprint

from ..certs import CERT_FILES, enrol, make_ca, renew, sign
from ..guardkit import APPEND, fired, publish, quarantines
from ..support import ConsulAgent, wait_for

pytestmark = pytest.mark.consul


@pytest.fixture
def satellite(make_cfg, tmp_path):
    """Build a Guard for node sat1 whose command trigger appends to tmp_path/fired."""
    guards = []

    def build(**overrides):
        settings = dict(role="satellite", node="sat1", guard__trigger="command",
                        guard__command=[sys.executable, "-c", APPEND, str(tmp_path / "fired")],
                        guard__confirmations=2, guard__confirm_interval=0.2, guard__check_interval=0.5)
        settings.update(overrides)
        cfg = make_cfg(**settings)
        guard = Guard(cfg, Store(cfg.consul), triggers.from_settings(cfg.guard))
        guards.append(guard)
        return guard

    yield build
    for g in guards:
        g.stop()


def _nothing_purged(guard, marker):
    assert quarantines(guard.root) == []
    assert fired(marker) == 0
    assert all((guard.root / "certs" / name).exists() for name in CERT_FILES)


def _start_until_a_match(guard) -> None:
    """Start ``guard`` and wait for its first check to find the local CA the published one."""
    guard.start()
    wait_for(lambda: guard.state.last and guard.state.last.verdict is Verdict.MATCH, 120, what="first match", step=0.01)


def _confirming_a_mismatch(guard):
    """Enrol ``guard``'s node under a CA, publish that CA, start the guard, then publish a CA with
    another key; return the enrolled CA once the guard is confirming the mismatch."""
    old = make_ca()
    enrol(guard.root, old)
    publish(guard.store, guard.key, old)
    _start_until_a_match(guard)
    publish(guard.store, guard.key, make_ca())
    wait_for(lambda: guard.state.phase == "confirming", 120, what="confirming", step=0.01)
    return old


def test_a_ca_renewed_with_the_same_key_is_logged_and_never_purges(satellite, tmp_path):
    guard = satellite()
    ca = make_ca()
    enrol(guard.root, ca)
    publish(guard.store, guard.key, ca)
    renewed = renew(ca)
    assert fingerprint.cert_sha256(renewed.pem) != fingerprint.cert_sha256(ca.pem)
    with structlog.testing.capture_logs() as logs:
        _start_until_a_match(guard)
        publish(guard.store, guard.key, renewed)
        wait_for(lambda: guard.state.last.verdict is Verdict.RENEWED, 120, what="renewal seen", step=0.01)
        checks = guard.state.checks
        wait_for(lambda: guard.state.checks >= checks + 2, 120, what="two periodic checks", step=0.01)  # 0.5 s apart
    _nothing_purged(guard, tmp_path / "fired")
    renewals = [e for e in logs if e.get("verdict") == "renewed-same-key"]
    assert renewals and all(e["local_ca_spki_sha256"] == e["published_ca_spki_sha256"] for e in renewals)
    assert not any("mismatch" in e["event"] for e in logs)


def test_a_ca_with_a_new_key_quarantines_every_certificate_file_and_fires_the_trigger(satellite, tmp_path):
    guard = satellite()
    old, new = make_ca(), make_ca()
    files = enrol(guard.root, old)
    publish(guard.store, guard.key, old)
    _start_until_a_match(guard)
    publish(guard.store, guard.key, new)
    wait_for(lambda: guard.state.fired == 1, 120, what="trigger fired", step=0.01)
    assert fired(tmp_path / "fired") == 1
    [qdir] = quarantines(guard.root)
    for name, data in files.items():
        assert (qdir / name).read_bytes() == data, name
        assert not (guard.root / "certs" / name).exists()
    note = json.loads((qdir / DECISION_FILE).read_text())
    assert note["local_ca_spki_sha256"] == fingerprint.spki_sha256(old.pem)
    assert note["published_ca_spki_sha256"] == fingerprint.spki_sha256(new.pem)
    assert (qdir.stat().st_mode & 0o777) == 0o700


def test_a_node_certificate_that_no_longer_verifies_against_the_published_ca_is_purged(satellite, tmp_path):
    guard = satellite()
    ca = make_ca()
    enrol(guard.root, ca)
    (guard.root / "certs/sat1.crt").write_bytes(sign(make_ca("Icinga CA"), "sat1")[1])
    publish(guard.store, guard.key, ca)
    decision = guard.check("test")
    assert "certs/sat1.crt does not verify" in decision.reason
    assert fired(tmp_path / "fired") == 1
    assert len(quarantines(guard.root)) == 1


def test_nothing_is_purged_while_no_ca_is_published(satellite, tmp_path):
    guard = satellite()
    enrol(guard.root, make_ca())
    decision = guard.check("test")
    assert decision.verdict is Verdict.UNKNOWN and "no CA is published" in decision.reason
    assert decision.local_spki is not None
    _nothing_purged(guard, tmp_path / "fired")


@pytest.mark.parametrize("how", ["pem does not parse", "fingerprint does not match", "not json"])
def test_nothing_is_purged_while_the_published_ca_is_invalid(satellite, tmp_path, how):
    guard = satellite()
    local, other = make_ca(), make_ca()
    enrol(guard.root, local)
    publish(guard.store, guard.key, other)
    doc = json.loads(guard.store.get(guard.key).value)
    if how == "pem does not parse":
        doc["pem"] = "-----BEGIN CERTIFICATE-----\nMIIBroken\n-----END CERTIFICATE-----\n"
        blob = json.dumps(doc).encode()
    elif how == "fingerprint does not match":
        doc["spki_sha256"] = fingerprint.spki_sha256(make_ca().pem)
        blob = json.dumps(doc).encode()
    else:
        blob = b"<html>maintenance</html>"
    guard.store.put(guard.key, blob)
    decision = guard.check("test")
    assert decision.verdict is Verdict.UNKNOWN and "published CA is invalid" in decision.reason
    _nothing_purged(guard, tmp_path / "fired")


def test_nothing_is_purged_while_the_local_ca_is_missing_because_the_node_is_not_enrolled(satellite, tmp_path):
    guard = satellite()
    enrol(guard.root, make_ca())
    (guard.root / "certs/ca.crt").unlink()
    publish(guard.store, guard.key, make_ca())
    decision = guard.check("test")
    assert decision.verdict is Verdict.UNKNOWN and "not enrolled" in decision.reason
    assert quarantines(guard.root) == [] and fired(tmp_path / "fired") == 0


def test_a_mismatch_that_goes_away_before_it_is_confirmed_purges_nothing(satellite, tmp_path):
    guard = satellite(guard__confirm_interval=1.0)
    old = _confirming_a_mismatch(guard)
    publish(guard.store, guard.key, old)  # the master flapped back
    wait_for(lambda: guard.state.phase == "idle", 120, what="confirmation over", step=0.01)
    time.sleep(0.6)  # and one more periodic check
    _nothing_purged(guard, tmp_path / "fired")


def test_nothing_is_purged_when_consul_stops_in_the_middle_of_a_mismatch(consul_bin, satellite, tmp_path):
    agent = ConsulAgent(consul_bin, dev=True, workdir=str(tmp_path / "consul")).start()
    try:
        guard = satellite(consul__addr=[agent.addr], guard__confirm_interval=1.0, guard__check_interval=0.3)
        old = _confirming_a_mismatch(guard)
        agent.stop(signal.SIGKILL)
        wait_for(lambda: guard.state.phase == "idle", 120, what="confirmation over", step=0.01)
        assert guard.state.last.verdict is Verdict.UNKNOWN and "Consul" in guard.state.last.reason
        checks = guard.state.checks
        # Consul stays away: the periodic checks go on, and still purge nothing.
        wait_for(lambda: guard.state.checks >= checks + 3, 120, what="three checks without Consul", step=0.01)
        assert guard.state.last.verdict is Verdict.UNKNOWN
        assert guard.state.last.local_spki == fingerprint.spki_sha256(old.pem)
        _nothing_purged(guard, tmp_path / "fired")
        # Consul away is no /healthz 503 (restarting would not bring it back); Consul refusing is.
        assert "Consul unreachable" in guard.state.watch_problem and guard.problem() == ""
    finally:
        agent.cleanup()


def test_at_most_one_purge_per_window_even_across_a_restart_of_the_sidecar(satellite, tmp_path):
    guard = satellite(guard__purge_window=600)
    a, b = make_ca(), make_ca()
    enrol(guard.root, a)
    publish(guard.store, guard.key, b)
    assert guard.check("test").verdict is Verdict.MISMATCH
    assert fired(tmp_path / "fired") == 1 and len(quarantines(guard.root)) == 1
    # The entrypoint enrols again, but against the old CA: the master flaps.
    enrol(guard.root, a)
    with structlog.testing.capture_logs() as logs:
        assert guard.check("test").verdict is Verdict.MISMATCH
        restarted = satellite(guard__purge_window=600)  # a new process knows only the quarantine dir
        assert restarted.check("test").verdict is Verdict.MISMATCH
    assert fired(tmp_path / "fired") == 1 and len(quarantines(guard.root)) == 1
    assert (guard.root / "certs/ca.crt").read_bytes() == a.pem
    suppressed = [e for e in logs if "within the purge window" in e["event"]]
    assert len(suppressed) == 2
    assert all(e["local_ca_spki_sha256"] and e["published_ca_spki_sha256"] for e in suppressed)


def test_every_decision_is_logged_with_both_fingerprints(satellite, tmp_path):
    guard = satellite()
    ca = make_ca()
    with structlog.testing.capture_logs() as logs:
        guard.check("no local ca, nothing published")
        enrol(guard.root, ca)
        guard.check("nothing published")
        publish(guard.store, guard.key, ca)
        guard.check("match")
        publish(guard.store, guard.key, renew(ca))
        guard.check("renewed")
        publish(guard.store, guard.key, make_ca())
        guard.check("mismatch")
    checks = [e for e in logs if e["event"] == "CA check"]
    assert [e["verdict"] for e in checks] == ["cannot-tell", "cannot-tell", "match", "renewed-same-key",
                                              "mismatch", "mismatch", "mismatch"]  # two confirmations
    for e in checks:
        assert "local_ca_spki_sha256" in e and "published_ca_spki_sha256" in e, e
    assert all(e["local_ca_spki_sha256"] and e["published_ca_spki_sha256"] for e in checks[2:])
    acted = [e for e in logs if e["event"] in ("certificates quarantined", "restart triggered")]
    assert len(acted) == 2 and all(e["local_ca_spki_sha256"] != e["published_ca_spki_sha256"] for e in acted)
