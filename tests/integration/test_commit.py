"""Commit behaviour against the real Consul agent: cost of an incremental commit, crash safety."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time

import pytest

from statesync.consul.store import Store
from statesync.restore.apply import restore
from statesync.tree.scan import Scanner

from ..support import clean_env, statesync_cmd

pytestmark = pytest.mark.consul


def _fill(root, n, size=4096):
    for i in range(n):
        d = root / f"d{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}").write_bytes(os.urandom(size))


def _modify_indexes(store: Store, prefix: str) -> dict[str, int]:
    return {p.key: p.modify_index for p in store.get_prefix(prefix)}


def test_changing_one_file_in_a_10000_file_tree_costs_a_handful_of_kv_writes(make_cfg, repo_for, tmp_path):
    cfg = make_cfg()
    _fill(cfg.root, 10_000)
    repo = repo_for(cfg)
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    known: set[str] = set()
    first = repo.commit(scanner.scan(known), repo.head(), known)
    assert first.record.files == 10_000

    store = Store(cfg.consul)
    before = _modify_indexes(store, cfg.layout.node_root)
    (cfg.root / "d007/f00007").write_bytes(os.urandom(4096))
    writes_before = repo.store.stats.kv_writes
    second = repo.commit(scanner.scan(known), first.head, known)
    after = _modify_indexes(store, cfg.layout.node_root)

    changed = {k for k, idx in after.items() if before.get(k) != idx}
    # one file chunk, the manifest's chunks, the snapshot record and the head
    assert len(changed) <= 2 + 2 + len(second.record.manifest_chunks), changed
    assert cfg.layout.head in changed
    assert cfg.layout.snapshot(second.record.id) in changed
    assert repo.store.stats.kv_writes - writes_before == second.kv_writes <= 6
    assert second.chunks_written <= 1 + len(second.record.manifest_chunks)


def test_a_backup_killed_at_random_moments_always_leaves_a_head_that_restores(make_cfg, repo_for, consul, tmp_path):
    cfg = make_cfg(chunk_size=65536)
    rng = random.Random(1234)
    _fill(cfg.root, 300, size=20_000)
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=cfg.prefix, STATESYNC_ROOT=str(cfg.root),
               STATESYNC_NODE=cfg.node, STATESYNC_CHUNK_SIZE="65536", STATESYNC_LOG_FORMAT="json",
               STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    repo = repo_for(cfg)
    # How long one backup process runs here (start-up, scan, commit): the kills land within it.
    started = time.monotonic()
    subprocess.run(statesync_cmd("backup"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=120)
    duration = time.monotonic() - started
    kills = completed = round_ = 0
    # 25 rounds, and more (up to 100) until 5 kills landed while a backup ran: a machine whose load
    # fell after the measurement above runs backups faster than it says, and the kills come late.
    while round_ < 25 or (kills < 5 and round_ < 100):
        for path in rng.sample(sorted(p for p in cfg.root.rglob("f*")), 40):
            path.write_bytes(os.urandom(20_000))
        proc = subprocess.Popen(statesync_cmd("backup"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2) * duration)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        else:
            completed += 1
            duration *= 0.8  # it was over before the kill: aim earlier
        proc.wait(120)
        record = repo.head().record
        round_ += 1
        if record is None:
            continue
        target = tmp_path / f"restore-{round_}"
        restore(repo, record, target)
        assert sum(1 for _ in target.rglob("f*")) == record.files
        shutil.rmtree(target)
    print(f"{round_} rounds: {kills} backups killed, {completed} finished first")
    assert kills >= 5, f"only {kills} of {round_} kills landed while a backup ran"
    assert repo.head().record is not None


def test_garbage_collection_deletes_only_chunks_unreferenced_for_longer_than_the_grace(make_cfg, repo_for):
    cfg = make_cfg(keep=1)
    repo = repo_for(cfg)
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    cfg.root.mkdir(parents=True)
    (cfg.root / "a").write_bytes(b"first version")
    known: set[str] = set()
    first = repo.commit(scanner.scan(known), repo.head(), known)
    old_chunks = set(repo.refs(first.record))
    (cfg.root / "a").write_bytes(b"second version")
    second = repo.commit(scanner.scan(known), first.head, known)
    orphans = old_chunks - repo.refs(second.record)
    assert orphans

    assert repo.collect_garbage(grace=60, now=1000.0) == 0  # first sighting only marks them
    assert repo.collect_garbage(grace=60, now=1030.0) == 0  # still inside the grace
    assert repo.collect_garbage(grace=60, now=1061.0) == len(orphans)
    stored = set(repo.store.keys(cfg.layout.chunks))
    assert not {cfg.layout.chunk(d) for d in orphans} & stored
    assert {cfg.layout.chunk(d) for d in repo.refs(second.record)} <= stored
    target = cfg.root.parent / "restored"
    restore(repo, second.record, target)
    assert (target / "a").read_bytes() == b"second version"


def test_a_commit_on_a_stale_head_is_refused_and_leaves_the_head_alone(make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    cfg.root.mkdir(parents=True)
    (cfg.root / "a").write_text("1")
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    known: set[str] = set()
    base = repo.head()
    first = repo.commit(scanner.scan(known), base, known)
    (cfg.root / "a").write_text("2")
    from statesync.errors import CasConflict
    with pytest.raises(CasConflict):
        repo.commit(scanner.scan(known), base, known)
    assert repo.head().record.id == first.record.id
