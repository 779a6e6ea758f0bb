"""The master's CA publication (statesync.publish) against the real Consul."""
from __future__ import annotations

import threading

import pytest
import structlog

from statesync.guard.publish import CaPublisher
from statesync.pki import cadoc, fingerprint
from statesync.sidecar.daemon import Daemon
from statesync.snapshot.scan import Scanner

from .certs import make_ca, renew
from .support import wait_for

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


def test_a_renewal_and_a_new_key_are_published_and_told_apart_in_the_log(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    publisher = CaPublisher(repo, cfg.root)
    ca = make_ca()
    with structlog.testing.capture_logs() as logs:
        assert publisher.publish(cadoc.from_pem(ca.pem, "t", "m", "s1")) == "published"
        assert publisher.publish(cadoc.from_pem(ca.pem, "t2", "m", "s2")) == "unchanged"
        assert publisher.publish(cadoc.from_pem(renew(ca).pem, "t3", "m", "s3")) == "renewed"
        assert publisher.publish(cadoc.from_pem(make_ca().pem, "t4", "m", "s4")) == "replaced"
    events = [e["event"] for e in logs if e["log_level"] != "debug"]
    assert events == ["CA published", "CA certificate renewed with the same key; published",
                      "CA key changed; published the new CA, satellites will enrol again"]


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
        wait_for(lambda: seen, 10, what="first hook call", step=0.01)
        (cfg.root / "b").write_text("2")
        wait_for(lambda: any("b" in paths for _, paths in seen), 10, what="hook after the second commit", step=0.01)
    finally:
        daemon.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert seen[-1][0] == daemon.state.last_commit_id
