"""The master's CA publication (statesync.publish) against the real Consul."""
from __future__ import annotations

import threading

import pytest
import structlog

from statesync import metrics
from statesync.guard.publish import CaPublisher
from statesync.pki import ca_acceptance, cadoc, fingerprint
from statesync.sidecar.daemon import Daemon
from statesync.tree.scan import Scanner

from ..certs import make_ca, renew
from ..support import wait_for

pytestmark = pytest.mark.consul


def _root_with_ca(make_cfg, repo_for, pem: bytes):
    """A config whose root holds ``pem`` as ca/ca.crt, its repo, and a scanner with its (empty) known set."""
    cfg = make_cfg()
    repo = repo_for(cfg)
    (cfg.root / "ca").mkdir(parents=True)
    (cfg.root / "ca/ca.crt").write_bytes(pem)
    return cfg, repo, Scanner(cfg.root, cfg.path_filter, cfg.chunk_size), set()


def _commit(cfg, repo, scanner, known, head):
    res = repo.commit(scanner.scan(known), head, known)
    return res, res.head


def test_the_ca_of_a_committed_snapshot_is_published_once_and_not_rewritten_while_unchanged(make_cfg, repo_for):
    ca = make_ca()
    cfg, repo, scanner, known = _root_with_ca(make_cfg, repo_for, ca.pem)
    res, head = _commit(cfg, repo, scanner, known, repo.head())
    publisher = CaPublisher(repo, cfg.root, recheck=0)
    publisher(res.record, scanner.scan(known).manifest)
    pair = repo.store.get(cfg.layout.ca)
    doc = cadoc.decode(pair.value)
    assert (doc.spki_sha256, doc.cert_sha256) == fingerprint.identity(ca.pem)
    assert (doc.node, doc.snapshot) == (cfg.node, res.record.id)

    (cfg.root / "unrelated").write_text("another commit, same CA")
    res2, head = _commit(cfg, repo, scanner, known, head)
    publisher(res2.record, scanner.scan(known).manifest)
    assert repo.store.get(cfg.layout.ca).modify_index == pair.modify_index  # not rewritten


def test_a_renewal_is_published_and_a_new_key_is_refused_without_an_operators_decision(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    publisher = CaPublisher(repo, cfg.root)
    ca = make_ca()
    renewed = renew(ca)
    with structlog.testing.capture_logs() as logs:
        assert publisher.publish(cadoc.from_pem(ca.pem, "t", "m", "s1")) == "published"
        assert publisher.publish(cadoc.from_pem(ca.pem, "t2", "m", "s2")) == "unchanged"
        assert publisher.publish(cadoc.from_pem(renewed.pem, "t3", "m", "s3")) == "renewed"
        assert publisher.publish(cadoc.from_pem(make_ca().pem, "t4", "m", "s4")) == "refused"
    events = [(e["log_level"], e["event"].split(":")[0]) for e in logs if e["log_level"] != "debug"]
    assert events == [("info", "CA published"), ("info", "CA certificate renewed with the same key; published"),
                      ("error", "CA conflict")]
    assert publisher.conflicted
    assert cadoc.decode(repo.store.get(cfg.layout.ca).value).cert_sha256 == fingerprint.cert_sha256(renewed.pem)
    history = ca_acceptance.decode_history(repo.store.get(cfg.layout.ca_history).value)
    assert [h["decision"] for h in history] == ["renewal"]


def _accept(repo, cfg, old_pem: bytes | None, new_pem: bytes, reason="new CA") -> None:
    new = cadoc.from_pem(new_pem, "", cfg.node, "")
    record = ca_acceptance.Acceptance(fingerprint.spki_sha256(old_pem) if old_pem else "", new.spki_sha256,
                                   new.cert_sha256, new.subject, cfg.node, "op@host", "now", reason)
    repo.store.put(cfg.layout.ca_accept, ca_acceptance.encode_acceptance(record))


def test_an_accepted_new_key_is_published_once_consuming_the_record_and_filing_the_old_ca(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    publisher = CaPublisher(repo, cfg.root)
    old, new, other = make_ca(), make_ca(), make_ca()
    assert publisher.publish(cadoc.from_pem(old.pem, "t", "m", "s1")) == "published"
    _accept(repo, cfg, make_ca().pem, new.pem)  # names another old key: not this change
    assert publisher.publish(cadoc.from_pem(new.pem, "t", "m", "s2")) == "refused"
    _accept(repo, cfg, old.pem, new.pem, reason="CA key compromised")
    assert publisher.publish(cadoc.from_pem(new.pem, "t", "m", "s3")) == "accepted"
    assert not publisher.conflicted
    assert repo.store.get(cfg.layout.ca_accept) is None
    assert cadoc.decode(repo.store.get(cfg.layout.ca).value).spki_sha256 == fingerprint.spki_sha256(new.pem)
    [entry] = ca_acceptance.decode_history(repo.store.get(cfg.layout.ca_history).value)
    assert entry["doc"]["spki_sha256"] == fingerprint.spki_sha256(old.pem)
    assert (entry["decision"], entry["acceptance"]["reason"]) == ("accepted", "CA key compromised")
    assert publisher.publish(cadoc.from_pem(other.pem, "t", "m", "s4")) == "refused"  # used once


def test_keep_local_replaces_the_published_key_logging_an_error_each_time(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    CaPublisher(repo, cfg.root).publish(cadoc.from_pem(make_ca().pem, "t", "other", "s0"))
    publisher = CaPublisher(repo, cfg.root, on_conflict="keep-local")
    with structlog.testing.capture_logs() as logs:
        assert publisher.publish(cadoc.from_pem(make_ca().pem, "t", "m", "s1")) == "replaced"
        assert publisher.publish(cadoc.from_pem(make_ca().pem, "t", "m", "s2")) == "replaced"
    overrides = [e for e in logs if "on_conflict=keep-local overrides" in e["event"]]
    assert [e["log_level"] for e in overrides] == ["error", "error"]
    history = ca_acceptance.decode_history(repo.store.get(cfg.layout.ca_history).value)
    assert [h["decision"] for h in history] == ["on_conflict=keep-local"] * 2


def test_a_publisher_whose_ca_another_publisher_replaced_does_not_fight_even_with_keep_local(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    mine, theirs = make_ca(), make_ca()
    publisher = CaPublisher(repo, cfg.root, on_conflict="keep-local")
    assert publisher.publish(cadoc.from_pem(mine.pem, "t", "m", "s1")) == "published"
    CaPublisher(repo, cfg.root, on_conflict="keep-local").publish(cadoc.from_pem(theirs.pem, "t", "m2", "x"))
    with structlog.testing.capture_logs() as logs:
        assert publisher.publish(cadoc.from_pem(renew(mine).pem, "t", "m", "s2")) == "refused"
        assert publisher.publish(cadoc.from_pem(renew(mine).pem, "t", "m", "s3")) == "refused"
    assert [e["log_level"] for e in logs if e["log_level"] != "debug"] == ["error"]  # one alert, not one per sync
    assert "another publisher replaced" in logs[0]["event"]
    assert cadoc.decode(repo.store.get(cfg.layout.ca).value).spki_sha256 == fingerprint.spki_sha256(theirs.pem)
    assert metrics.REGISTRY.get_sample_value("statesync_ca_conflict") == 1
    # the operator puts the fleet's CA back on this master: the conflict is over
    assert publisher.publish(cadoc.from_pem(theirs.pem, "t", "m", "s4")) == "unchanged"
    assert not publisher.conflicted and metrics.REGISTRY.get_sample_value("statesync_ca_conflict") == 0


def test_the_history_keeps_the_last_ten_replaced_cas(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    publisher = CaPublisher(repo, cfg.root, on_conflict="keep-local")
    cas = [make_ca() for _ in range(13)]
    for i, ca in enumerate(cas):
        publisher.publish(cadoc.from_pem(ca.pem, "t", "m", f"s{i}"))
    history = ca_acceptance.decode_history(repo.store.get(cfg.layout.ca_history).value)
    assert [h["doc"]["snapshot"] for h in history] == [f"s{i}" for i in range(11, 1, -1)]


def test_an_invalid_published_document_is_replaced(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    repo.store.put(cfg.layout.ca, b"garbage")
    ca = make_ca()
    assert CaPublisher(repo, cfg.root).publish(cadoc.from_pem(ca.pem, "t", "m", "s")) == "published"
    assert cadoc.decode(repo.store.get(cfg.layout.ca).value).spki_sha256 == fingerprint.spki_sha256(ca.pem)


def test_the_committed_certificate_is_published_even_when_the_file_changed_since(make_cfg, repo_for):
    committed = make_ca()
    cfg, repo, scanner, known = _root_with_ca(make_cfg, repo_for, committed.pem)
    scan = scanner.scan(known)
    res = repo.commit(scan, repo.head(), known)
    (cfg.root / "ca/ca.crt").write_bytes(make_ca().pem)  # not committed yet
    CaPublisher(repo, cfg.root)(res.record, scan.manifest)
    assert cadoc.decode(repo.store.get(cfg.layout.ca).value).spki_sha256 == fingerprint.spki_sha256(committed.pem)


def test_a_ca_file_that_is_not_a_certificate_is_not_published(make_cfg, repo_for):
    not_a_cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    cfg, repo, scanner, known = _root_with_ca(make_cfg, repo_for, not_a_cert)
    res = repo.commit(scanner.scan(known), repo.head(), known)
    CaPublisher(repo, cfg.root)(res.record, scanner.scan(known).manifest)
    assert repo.store.get(cfg.layout.ca) is None


def test_the_daemon_runs_its_on_commit_hooks_after_each_sync_with_the_head_record(make_cfg, repo_for):
    cfg = make_cfg(debounce=0.05)
    cfg.root.mkdir(parents=True)
    (cfg.root / "a").write_text("1")
    daemon = Daemon(cfg, repo_for(cfg))
    seen = []
    daemon.on_commit.append(lambda record, manifest: seen.append((record.id, {e.path for e in manifest.entries})))
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: seen, 120, what="first hook call", step=0.01)
        (cfg.root / "b").write_text("2")
        wait_for(lambda: any("b" in paths for _, paths in seen), 120, what="hook after the second commit", step=0.01)
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert seen[-1][0] == daemon.state.last_commit_id


def test_a_first_publication_consumes_an_acceptance_made_when_nothing_was_published(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    ca = make_ca()
    _accept(repo, cfg, None, ca.pem)
    assert CaPublisher(repo, cfg.root).publish(cadoc.from_pem(ca.pem, "t", "m", "s")) == "published"
    assert repo.store.get(cfg.layout.ca_accept) is None


def test_the_one_reader_of_the_acceptance_record_tells_absent_valid_and_invalid_apart(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    assert ca_acceptance.read_pending(repo.store, cfg.layout.ca_accept) == ca_acceptance.Pending(None, 0)
    old, new = make_ca(), make_ca()
    _accept(repo, cfg, old.pem, new.pem, reason="rotation")
    pending = ca_acceptance.read_pending(repo.store, cfg.layout.ca_accept)
    assert (pending.record.reason, pending.index, pending.invalid) == (
        "rotation", repo.store.get(cfg.layout.ca_accept).modify_index, "")
    repo.store.put(cfg.layout.ca_accept, b"{}")
    pending = ca_acceptance.read_pending(repo.store, cfg.layout.ca_accept)
    # An invalid record keeps its index: accept-ca replaces it by check-and-set, the publisher ignores it.
    assert (pending.record, pending.index) == (None, repo.store.get(cfg.layout.ca_accept).modify_index)
    assert pending.invalid == "CA acceptance record has an unknown version"
