"""Crash consistency: the mirror daemon SIGKILLed at random moments during commits, 50 times or more.

Half the kills come a random few milliseconds after a commit's first chunks reach Consul, so
that many land between a commit's first write and its head move. A quarter come at a random
time after start (starting up, scanning, committing or idle), a quarter at a random time after
the sidecar's first commit of the round. The rounds are driven by what the sidecar did, not by
how fast it did it: they go on past 50 until enough of them moved the head and enough cut a
commit short (a loaded machine starts a sidecar slowly), bounded in count and time."""
from __future__ import annotations

import random
import shutil
import time
import urllib.error
import urllib.request

import pytest

from statesync.restore.apply import restore

from ..ha_support import Churn, check_history, make_state_tree, node_repo
from ..sidecar import Sidecar
from ..support import wait_for

pytestmark = pytest.mark.consul

KILLS = 50
# More rounds only when the machine made the first 50 miss their moments; a bound, not a goal.
MAX_ROUNDS, MAX_SECONDS = 3 * KILLS, 1800
MOVED, CUT_SHORT = KILLS // 3, 5
# Only to stop a hang: how long a sidecar may take to start and commit (on a loaded machine
# its start-up alone takes seconds).
PATIENCE = 120
# Small chunks and transactions of one chunk (and the fence) make every commit many
# transactions long (on loopback a commit is otherwise over in a millisecond or two), so
# that kills land inside them.
SETTINGS = {"chunk_size": 4096, "consul_txn_max_ops": 2, "lock_ttl": 1, "lock_delay": 0, "keep": 1000,
            "debounce": 0.05, "max_wait": 0.3}


def _wait_for_commit(sidecar: Sidecar) -> None:
    """Return once ``sidecar`` has logged a commit (it started, and took the writer lock)."""
    def committed() -> bool:
        assert sidecar.alive(), f"the sidecar exited\n{sidecar.output()[-2000:]}"
        return sidecar.count('"committed"') > 0
    wait_for(committed, PATIENCE, what="the sidecar's first commit", details=lambda: sidecar.output()[-2000:],
             step=0.02)


def _wait_for_change(addr: str, prefix: str, sidecar: Sidecar) -> None:
    """Return once a key below ``prefix`` changes (a Consul blocking query)."""
    url = f"http://{addr}/v1/kv/{prefix}?keys"
    index = _get(url, 30)
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        changed = _get(f"{url}&index={index}&wait=5s", 35)
        if changed != index:
            return
        assert sidecar.alive(), f"the sidecar exited\n{sidecar.output()[-2000:]}"
    raise AssertionError(f"no chunk written within {PATIENCE}s\n{sidecar.output()[-2000:]}")


def _get(url: str, timeout: float) -> str:
    """GET ``url``; return its X-Consul-Index (a 404 for a prefix without keys has one too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.headers.get("X-Consul-Index", "0")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
        return exc.headers.get("X-Consul-Index", "0")


def test_a_daemon_killed_at_random_moments_always_leaves_a_head_that_loads_verifies_and_restores(
        consul, prefix, tmp_path):
    rng = random.Random(50)
    root = tmp_path / "root"
    make_state_tree(root, 150, rng, size=(100, 4000))
    repo = node_repo([consul.addr], prefix)
    layout = repo.layout
    churn = Churn(root, seed=51, rate=40, size=(100, 4000)).start()
    previous = None
    interrupted = completed = round_ = 0
    started = time.monotonic()
    try:
        while round_ < KILLS or ((completed < MOVED or interrupted < CUT_SHORT) and round_ < MAX_ROUNDS
                                 and time.monotonic() - started < MAX_SECONDS):
            stored_before = set(repo.store.keys(layout.chunks))
            sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / f"sidecar-{round_}.log", ready_beside_log=True, **SETTINGS)
            try:
                if round_ % 2 == 0:
                    # A commit lasts milliseconds on loopback: catch the round's second one as its
                    # first chunks land (churn never stops, so a next commit always comes).
                    _wait_for_commit(sidecar)
                    _wait_for_change(consul.addr, layout.chunks, sidecar)
                    time.sleep(rng.uniform(0, 0.003))
                elif round_ % 4 == 1:
                    time.sleep(rng.uniform(0.3, 1.2))
                else:
                    _wait_for_commit(sidecar)
                    time.sleep(rng.uniform(0, 0.9))
            finally:
                sidecar.kill()
            round_ += 1
            # Consul would end the dead writer's session within twice its TTL; ending it now
            # keeps the rounds short without changing what the next writer finds.
            pair = repo.store.get(layout.lock)
            if pair is not None and pair.session:
                repo.store.session_destroy(pair.session)

            record = repo.head().record
            if record is None:
                continue
            target = tmp_path / "restored"
            restore(repo, record, target)  # fetches and verifies the manifest and every chunk
            assert sum(1 for p in target.rglob("*") if p.is_file()) == record.files
            shutil.rmtree(target)
            chain = check_history(repo, tmp_path, restore_all=False)
            if previous is not None:
                assert previous in {r.id for r in chain}, "the head must descend from the head before"
            completed += record.id != previous
            previous = record.id

            referenced = set().union(*(repo.refs(r) for r in chain))
            stored = {layout.digest_of_chunk_key(k) for k in repo.store.keys(layout.chunks)}
            new_orphans = {d for d in stored - referenced if layout.chunk(d) not in stored_before}
            interrupted += bool(new_orphans)
    finally:
        churn.stop()
    print(f"{round_} kills in {time.monotonic() - started:.0f}s: {completed} rounds moved the head, "
          f"{interrupted} left a commit's chunks without a head")
    assert completed >= MOVED, f"rounds that moved the head: {completed} of {round_} (the sidecars do not commit?)"
    assert interrupted >= CUT_SHORT, (
        f"kills between a commit's first chunk and its head move: {interrupted} of {round_}")
    # Every dead writer's uploads are plain garbage; a last clean run finishes the job.
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar-last.log", ready_beside_log=True, **SETTINGS)
    try:
        wait_for(lambda: sidecar.count('"committed"'), PATIENCE, what="a commit by a clean sidecar",
                 details=lambda: sidecar.output()[-2000:])
    finally:
        assert sidecar.stop() == 0
