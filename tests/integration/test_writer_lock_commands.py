"""The one-off commands that take the writer lock (`gc`, `rekey`) name themselves in what they say.

The lock-holding core lives in `consul/lock.py` and is shared; each message tells the operator
which command to run again, so `statesync gc` must never answer "run rekey again".
"""
from __future__ import annotations

import socket
from datetime import datetime, timezone

import pytest

from statesync.consul.lock import holder_value

from ..support import plain_lines
from .test_restore_safety import Env

pytestmark = pytest.mark.consul


def _error_lines(proc) -> list[str]:
    return [line for line in plain_lines(proc.stderr) if line.startswith("statesync: error: ")]


def _hold_lock(env: Env, lock_delay: float) -> str:
    """A writer's session holding the node's writer lock, as a running sidecar holds it."""
    store = env.repo.store
    session = store.session_create("a live writer", 30, lock_delay)
    store.lock_acquire(env.cfg.layout.lock, session, holder_value(socket.gethostname(), 4242,
                                                                  datetime.now(timezone.utc)))
    return session


def test_gc_beside_a_live_writer_is_refused_in_words_about_gc(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    session = _hold_lock(env, lock_delay=0)
    try:
        proc = env.run("gc")
    finally:
        env.repo.store.session_destroy(session)
    assert proc.returncode == 1, proc.stderr
    [line] = _error_lines(proc)
    assert "is held by" in line and "pid 4242" in line and "gc" in line, line
    assert "rekey" not in proc.stderr, proc.stderr


def test_gc_while_a_dead_writers_lock_delay_runs_tells_to_run_gc_again_not_rekey(consul, prefix, tmp_path):
    """The writer died holding the lock (its session ended), so Consul refuses the lock for its
    lock-delay, longer than gc waits: gc gives up and says which command to run again."""
    env = Env(consul, prefix, tmp_path / "root")
    env.repo.store.session_destroy(_hold_lock(env, lock_delay=60))
    proc = env.run("gc", STATESYNC_LOCK_DELAY="0")
    assert proc.returncode == 1, proc.stderr
    [line] = _error_lines(proc)
    assert "did not become free" in line and line.endswith("run gc again"), line
    assert "rekey" not in proc.stderr, proc.stderr


def test_gc_without_the_writer_lock_warns_that_gc_is_not_fenced(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    proc = env.run("gc", STATESYNC_LOCK_ENABLED="false")
    assert proc.returncode == 0, proc.stderr
    assert "gc is not fenced" in proc.stderr, proc.stderr
    assert "rekey" not in proc.stderr, proc.stderr


def test_rekey_still_tells_to_run_rekey_again(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    key = tmp_path / "new.key"
    assert env.run("keygen", "--out", str(key)).returncode == 0
    env.repo.store.session_destroy(_hold_lock(env, lock_delay=60))
    proc = env.run("rekey", "--new-key-file", str(key), STATESYNC_LOCK_DELAY="0")
    assert proc.returncode == 1, proc.stderr
    [line] = _error_lines(proc)
    assert line.endswith("run rekey again"), line
