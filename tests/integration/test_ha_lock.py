"""One writer per node: the session lock, its fence, and two sidecars on one root (real Consul)."""
from __future__ import annotations

import random
import threading
import time

import pytest

from statesync.consul.lock import LockSettings, WriterLock
from statesync.errors import LockLost
from statesync.tree.scan import Scanner

from ..ha_support import (
    Churn,
    assert_restores_to_tree,
    check_history,
    head_equals_tree,
    load_cfg,
    make_state_tree,
    node_repo,
)
from ..sidecar import Sidecar
from ..support import wait_for

pytestmark = pytest.mark.consul

TTL, DELAY = 1.0, 0.5
LOCK_ENV = {"lock_ttl": TTL, "lock_delay": DELAY, "keep": 1000, "debounce": 0.1, "max_wait": 0.5}
# Only to stop a hang: a loaded machine may take this long for what takes a second here.
PATIENCE = 120


def _indexes(store, prefix: str) -> dict[str, int]:
    return {p.key: p.modify_index for p in store.get_prefix(prefix)}


def test_a_writer_that_lost_its_lock_cannot_write_one_more_key(make_cfg, repo_for):
    cfg = make_cfg(keep=1)
    repo = repo_for(cfg)
    stop = threading.Event()
    first = WriterLock(repo.store, cfg.layout.lock, LockSettings(ttl=TTL, delay=0.0), name="first")
    second = WriterLock(repo.store, cfg.layout.lock, LockSettings(ttl=TTL, delay=0.0), name="second")
    try:
        assert first.acquire(stop)
        stale_fence = first.fence
        cfg.root.mkdir(parents=True)
        (cfg.root / "a").write_text("written while holding the lock")
        scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
        known: set[str] = set()
        committed = repo.commit(scanner.scan(known), repo.head(), known, fence=stale_fence)
        time.sleep(2.5 * TTL)
        assert first.held, "the renewal thread keeps the session alive past its TTL"

        # Consul ends the first writer's session (as it would after a lost network), and
        # the second takes the lock; the first has not noticed yet and still has its fence.
        repo.store.session_destroy(first.session)
        assert second.acquire(stop)
        before = _indexes(repo.store, cfg.layout.node_root)

        (cfg.root / "a").write_text("written after the lock was lost")
        (cfg.root / "big").write_bytes(random.Random(1).randbytes(600 * 1024))  # would go by plain PUT unfenced
        with pytest.raises(LockLost):  # chunks first, in fenced transactions
            repo.commit(scanner.scan(set(known)), committed.head, set(known), fence=stale_fence)
        (cfg.root / "big").unlink()
        scanner.forget()  # its cache holds content that the refused commit never stored
        with pytest.raises(LockLost):  # a small commit: chunks, record and head in one fenced transaction
            repo.commit(scanner.scan(set(known)), committed.head, set(known), fence=stale_fence)
        with pytest.raises(LockLost):
            repo.store.put_many([(cfg.layout.chunk("0" * 64), b"x")], fence=stale_fence)
        with pytest.raises(LockLost):
            repo.collect_garbage(grace=0, fence=stale_fence)
        assert _indexes(repo.store, cfg.layout.node_root) == before, "not one key may change"
        assert repo.head().record.id == committed.record.id
        assert wait_for(lambda: not first.held, PATIENCE, what="the renewal thread noticing the ended session")
        with pytest.raises(LockLost):
            first.fence
    finally:
        first.release()
        second.release()


def test_a_second_sidecar_waits_then_takes_over_when_the_writer_is_killed(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_state_tree(root, 60, random.Random(6))
    cfg = load_cfg([consul.addr], prefix, root)
    repo = node_repo([consul.addr], prefix)
    writer = Sidecar.start([consul.addr], prefix, root, tmp_path / "writer.log", ready_beside_log=True, **LOCK_ENV)
    standby = third = None
    churn = Churn(root, seed=61, rate=20)
    try:
        wait_for(lambda: repo.head().record is not None, PATIENCE, what="first snapshot")
        standby = Sidecar.start([consul.addr], prefix, root, tmp_path / "standby.log", ready_beside_log=True, **LOCK_ENV)
        # On the same root a standby waits for the root lock first, then for the writer lock.
        wait_for(lambda: standby.count('"waiting for the root lock"'), PATIENCE, what="standby waiting")
        churn.start()
        wait_for(lambda: writer.count('"committed"') >= 5, PATIENCE, what="writer commits during churn")
        assert standby.count('"committed"') == 0, "the standby must not write while the writer holds the lock"

        writer.kill()
        killed = time.monotonic()
        marker = root / "api/after-kill.conf"
        marker.write_text("written after the writer died")
        # How soon is the lock's design (ttl, lock-delay); here only that the standby takes over.
        wait_for(lambda: _has(repo, "api/after-kill.conf"), PATIENCE, what="takeover")
        takeover = time.monotonic() - killed
        print(f"takeover after SIGKILL: {takeover:.2f}s (ttl {TTL}s, lock-delay {DELAY}s; not a pass mark)")
        assert standby.count('"writer lock acquired"') == 1

        # A clean stop releases the lock: a third sidecar takes over without any TTL or lock-delay.
        third = Sidecar.start([consul.addr], prefix, root, tmp_path / "third.log", ready_beside_log=True, **LOCK_ENV)
        wait_for(lambda: third.count('"waiting for the root lock"'), PATIENCE, what="third waiting")
        assert standby.stop() == 0
        assert '"writer lock released"' in standby.output(), "a clean stop hands the lock over at once"
        stopped = time.monotonic()
        (root / "api/after-stop.conf").write_text("written after a clean stop")
        wait_for(lambda: _has(repo, "api/after-stop.conf"), PATIENCE, what="handover after a clean stop")
        print(f"handover after SIGTERM: {time.monotonic() - stopped:.2f}s (not a pass mark)")
        wait_for(lambda: third.count('"committed"') >= 3, PATIENCE, what="the third sidecar committing the churn")

        churn.stop()
        record = wait_for(lambda: head_equals_tree(repo, cfg), PATIENCE, step=0.2, what="head equal to the final tree")
        assert_restores_to_tree(repo, record, root, tmp_path)
        chain = check_history(repo, tmp_path)
        assert len(chain) >= 8
    finally:
        churn.stop()
        for sidecar in (writer, standby, third):
            if sidecar is not None and sidecar.alive():
                sidecar.stop()
    assert '"writer lock released"' in third.output()


def _has(repo, path: str) -> bool:
    record = repo.head().record
    return record is not None and path in repo.manifest(record).by_path()
