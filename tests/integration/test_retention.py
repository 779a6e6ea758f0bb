"""Retention against the real Consul agent: the CA rule, pins, forget and gc."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from statesync.pki.fingerprint import spki_sha256
from statesync.restore.apply import restore
from statesync.sidecar.wiring import open_repo
from statesync.tree.scan import Scanner

from ..sidecar import Sidecar
from ..support import plain_lines, tree_state, wait_for
from .test_restore_safety import Env, icinga_tree, make_ca_pem

pytestmark = pytest.mark.consul


def _commit(repo, scanner, known):
    res = repo.commit(scanner.scan(known), repo.head(), known)
    assert res is not None
    return res.record


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in plain_lines(proc.stderr) if not line.startswith("{")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("statesync: error: ")
    return lines[0]


def _ids(env: Env) -> list[str]:
    return [r.id for r in env.repo.records()]


def _backup(env: Env, n: int, **extra) -> str:
    (env.root / "icinga2.state").write_bytes(os.urandom(3000) + str(n).encode())
    env.run("backup", check=True, **extra)
    return env.repo.head().record.id


def test_the_last_snapshot_of_the_good_ca_survives_ten_commits_under_a_wrong_ca_and_restores(make_cfg, tmp_path):
    cfg = make_cfg(keep=2)
    good_pem, _ = make_ca_pem("Good CA")
    wrong_pem, _ = make_ca_pem("Wrong CA")
    (cfg.root / "ca").mkdir(parents=True)
    (cfg.root / "ca/ca.crt").write_bytes(good_pem)
    repo = open_repo(cfg)
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    known: set[str] = set()
    good = []
    for i in range(3):
        (cfg.root / "icinga2.state").write_bytes(os.urandom(2000) + bytes([i]))
        good.append(_commit(repo, scanner, known))
    good_state = tree_state(cfg.root)
    (cfg.root / "ca/ca.crt").write_bytes(wrong_pem)
    wrong = []
    for i in range(10):
        (cfg.root / "icinga2.state").write_bytes(os.urandom(2000) + bytes([100 + i]))
        wrong.append(_commit(repo, scanner, known))

    assert {r.ca for r in good} == {spki_sha256(good_pem)} and {r.ca for r in wrong} == {spki_sha256(wrong_pem)}
    records = repo.records()
    assert [r.id for r in records] == [good[-1].id, wrong[-2].id, wrong[-1].id]
    target = tmp_path / "restored"
    restore(repo, records[0], target)
    assert (target / "ca/ca.crt").read_bytes() == good_pem
    assert tree_state(target) == good_state


def test_a_satellite_without_ca_dir_is_identified_by_its_certs_ca(make_cfg):
    cfg = make_cfg()
    pem, _ = make_ca_pem()
    (cfg.root / "certs").mkdir(parents=True)
    (cfg.root / "certs/ca.crt").write_bytes(pem)
    repo = open_repo(cfg)
    rec = _commit(repo, Scanner(cfg.root, cfg.path_filter, cfg.chunk_size), set())
    assert rec.ca == spki_sha256(pem) and repo.record(rec.id).ca == rec.ca


def test_a_pinned_snapshot_survives_pruning_until_it_is_unpinned(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    first = _backup(env, 0, STATESYNC_KEEP="1")
    proc = env.run("pin", first)
    assert proc.returncode == 0, proc.stderr
    assert f"snapshot {first} of node master1 pinned" in proc.stdout
    for n in range(1, 4):
        newest = _backup(env, n, STATESYNC_KEEP="1")
    assert _ids(env) == [first, newest]

    listing = env.run("snapshots", check=True).stdout.splitlines()
    assert [line.split()[0] for line in listing if line.endswith("pinned")] == [first]
    rows = json.loads(env.run("snapshots", "--json", check=True).stdout)
    assert {r["id"]: r["pinned"] for r in rows} == {first: True, newest: False}
    assert rows[0]["ca_spki_sha256"] == env.repo.record(first).ca != ""

    assert env.run("unpin", first, check=True).returncode == 0
    latest = _backup(env, 9, STATESYNC_KEEP="1")
    assert _ids(env) == [latest]


def test_pinning_an_unknown_snapshot_is_one_line_and_exit_1(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    _backup(env, 0)
    proc = env.run("pin", "20200101T000000.000000Z-abcdef")
    assert proc.returncode == 1
    assert "has no snapshot '20200101T000000.000000Z-abcdef'" in _one_error_line(proc)
    assert env.repo.store.get(env.cfg.layout.pins) is None


def test_forget_dry_run_shows_why_each_survivor_is_kept_and_removes_nothing(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    ids = [_backup(env, n) for n in range(5)]
    assert env.run("pin", ids[0], check=True).returncode == 0

    proc = env.run("forget", "--dry-run", STATESYNC_KEEP="2")
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[2:] for line in proc.stdout.splitlines()[1:-1]}
    assert rows == {ids[4]: ["keep", "last,ca,head"], ids[3]: ["keep", "last"], ids[2]: ["remove", "-"],
                    ids[1]: ["remove", "-"], ids[0]: ["keep", "pinned"]}
    assert proc.stdout.splitlines()[-1] == "dry run (keep = 2): 2 of 5 snapshot(s) would be removed; nothing removed"
    assert _ids(env) == ids

    proc = env.run("forget", STATESYNC_KEEP="2")
    assert proc.returncode == 0, proc.stderr
    assert _ids(env) == [ids[0], ids[3], ids[4]]


def _chunk_count(env: Env) -> int:
    return len(env.repo.store.keys(env.cfg.layout.chunks))


def test_gc_removes_garbage_and_refuses_while_a_sidecar_holds_the_writer_lock(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    for n in range(4):
        _backup(env, n, STATESYNC_KEEP="1")
    final = tree_state(env.root)
    stored = _chunk_count(env)
    garbage = stored - len(env.repo.refs(env.repo.head().record))
    assert garbage >= 3  # at least the three old versions of icinga2.state
    # the first collection only notes what is unreferenced: gc_grace counts from there
    assert env.run("gc", STATESYNC_GC_GRACE="0", check=True).stdout.startswith("collected 0 ")
    proc = env.run("gc", STATESYNC_GC_GRACE="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"collected {garbage} ")
    assert _chunk_count(env) == stored - garbage
    assert env.run("restore", STATESYNC_ROOT=str(tmp_path / "restored"), check=True).returncode == 0
    assert tree_state(tmp_path / "restored") == final

    sidecar = Sidecar(env.env(STATESYNC_DEBOUNCE="0.05", STATESYNC_MAX_WAIT="0.2"), tmp_path / "sidecar.log")
    try:
        wait_for(lambda: (p := env.repo.store.get(env.cfg.layout.lock)) is not None and p.session, 30,
                 what="the sidecar taking the writer lock", step=0.1,
                 details=lambda: (tmp_path / "sidecar.log").read_text()[-2000:])
        before = _chunk_count(env)
        proc = env.run("gc", STATESYNC_GC_GRACE="0")
        assert proc.returncode == 1
        line = _one_error_line(proc)
        assert line.startswith("statesync: error: the writer lock of node 'master1' is held by ")
        assert f"pid {sidecar.pid} since " in line
        assert _chunk_count(env) == before
    finally:
        assert sidecar.stop() == 0


def test_a_pin_that_lands_after_a_commit_read_the_pins_fails_that_commit_instead_of_losing_its_snapshot(
        make_cfg, monkeypatch):
    from statesync.errors import CasConflict
    from statesync.repo import prune, repository
    cfg = make_cfg(keep=1)
    (cfg.root / "f").parent.mkdir(parents=True)
    repo = open_repo(cfg)
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    known: set[str] = set()
    (cfg.root / "f").write_bytes(b"one")
    first = _commit(repo, scanner, known)
    prune.set_pin(repo.store, repo.layout, first.id, True)
    monkeypatch.setattr(repository.prune, "read_pins", lambda store, layout: ([], 0))  # read before the pin
    (cfg.root / "f").write_bytes(b"two")
    with pytest.raises(CasConflict):
        repo.commit(scanner.scan(known), repo.head(), known)
    assert [r.id for r in repo.records()] == [first.id]


def test_a_commit_reads_each_snapshot_record_once_per_process_not_at_every_commit(make_cfg):
    cfg = make_cfg(keep=3)
    cfg.root.mkdir(parents=True)
    repo = open_repo(cfg)
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    known: set[str] = set()
    for i in range(3):
        (cfg.root / "f").write_bytes(bytes([i]))
        _commit(repo, scanner, known)
    fresh = open_repo(cfg)  # a new process: reads the records it has not seen, once
    read: list[str] = []
    real_txn, real_get = fresh.store.txn, fresh.store.get

    def counting_txn(ops, **options):
        read.extend(op.key for op in ops if op.verb == "get" and op.key.startswith(cfg.layout.snapshots))
        return real_txn(ops, **options)

    def counting_get(key, **options):
        if key.startswith(cfg.layout.snapshots):
            read.append(key)
        return real_get(key, **options)

    fresh.store.txn, fresh.store.get = counting_txn, counting_get
    for i in range(3, 8):
        (cfg.root / "f").write_bytes(bytes([i]))
        _commit(fresh, scanner, known)
    assert len(read) == 3
