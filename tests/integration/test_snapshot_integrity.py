"""Every committed snapshot restores: chunk accounting, a lost head, a wiped root (issue 14, items 1, 2, 6).

Real `statesync` processes against a real Consul agent.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from statesync.snapshot.chunking import DEFAULT_CHUNK_SIZE
from statesync.snapshot.record import Record, suspicious_drop

from ..ha_support import node_repo
from ..sidecar import Sidecar, statesync_env
from ..support import ConsulAgent, statesync_cmd, tree_state, wait_for

pytestmark = pytest.mark.consul


def _cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(statesync_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout)


def _head_holds(repo, path: str, content: bytes) -> bool:
    rec = repo.head().record
    if rec is None:
        return False
    entry = repo.manifest(rec).by_path().get(path)
    return entry is not None and entry.sha256 == hashlib.sha256(content).hexdigest()


def _stored_chunks(repo) -> set[str]:
    return {k.rsplit("/", 1)[1] for k in repo.store.keys(repo.layout.chunks)}


# -- item 1: a restore reads what the snapshot needs, not everything the node ever kept --------

def _peak_rss_of(argv: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``argv``; return its result and its peak RSS in bytes (VmHWM, read while it runs)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, deadline = 0, time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.02)
    out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), peak


@pytest.mark.serial
@pytest.mark.slow
def test_a_64_mib_file_with_nine_versions_kept_restores_with_the_default_settings(consul_bin, prefix, tmp_path):
    # An agent of its own: the 576 MiB this test stores would weigh on every later test.
    agent = ConsulAgent(consul_bin, dev=True, workdir=str(tmp_path / "consul")).start()
    try:
        root = tmp_path / "root"
        (root / "ca").mkdir(parents=True)
        env = statesync_env(agent.addr, prefix, root)
        big = root / "icinga2.state"
        versions = []
        for _ in range(9):
            data = os.urandom(64 * 1024 * 1024)
            big.write_bytes(data)
            versions.append(hashlib.sha256(data).hexdigest())
            done = _cli(env, "backup", timeout=300)
            assert done.returncode == 0, done.stderr
        del data
        assert len(node_repo([agent.addr], prefix).records()) == 9
        target = tmp_path / "rebuilt"
        done, peak = _peak_rss_of(statesync_cmd("restore"), {**env, "STATESYNC_ROOT": str(target)}, timeout=120)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256((target / "icinga2.state").read_bytes()).hexdigest() == versions[-1]
        # The node holds 9 × 64 MiB; the snapshot needs 64. Reading all of it took 2.4 GB.
        print(f"restore of 64 MiB with 9 versions kept: peak RSS {peak / 2**20:.0f} MiB")
        assert peak < 1024 * 2**20
    finally:
        agent.cleanup()


def test_a_restore_reads_the_snapshots_chunks_by_key_in_batches(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(300):
        (root / f"f{i:03}").write_bytes(os.urandom(2000))
    env = statesync_env(consul.addr, prefix, root)
    assert _cli(env, "backup").returncode == 0
    for i in range(300):  # a second version of every file: 300 chunks the restore must not read
        (root / f"f{i:03}").write_bytes(os.urandom(2000))
    assert _cli(env, "backup").returncode == 0
    repo = node_repo([consul.addr], prefix)
    record = repo.record()
    manifest = repo.manifest(record)
    before = repo.store.stats.requests
    contents = repo.contents(record, manifest)
    assert len(contents) == 300
    # 300 chunks of 2 kB: 5 transactions of at most 64 reads, none a read of the whole prefix
    assert repo.store.stats.requests - before == 5


# -- item 2: the daemon never treats a collected chunk as stored ----------------------------

def test_a_file_that_returns_to_content_collected_by_gc_restores_byte_identical(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "keep.conf").write_text("unchanged")
    a, b, c, d = (os.urandom(DEFAULT_CHUNK_SIZE + 50_000) for _ in range(4))  # two chunks each
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, keep=2, gc_interval=1, gc_grace=0, lock_enabled="false")
    repo = node_repo([consul.addr], prefix)
    try:
        for content in (a, b, c, d):
            (root / "state").write_bytes(content)
            wait_for(lambda: _head_holds(repo, "state", content), 120, "the commit of a new version",
                     details=sidecar.output)
        chunk_of_a = hashlib.sha256(a[:DEFAULT_CHUNK_SIZE]).hexdigest()
        ticks = iter(range(10**6))

        def collected() -> bool:
            (root / "tick").write_text(str(next(ticks)))  # commits, after which the sidecar collects
            return chunk_of_a not in _stored_chunks(repo)
        wait_for(collected, 120, "GC to collect the first version", details=sidecar.output, step=0.5)
        (root / "state").write_bytes(a)
        wait_for(lambda: _head_holds(repo, "state", a), 120, "the commit of the old content again",
                 details=sidecar.output)
    finally:
        assert sidecar.stop() == 0, sidecar.output()
    target = tmp_path / "restored"
    done = _cli(statesync_env(consul.addr, prefix, target), "restore")
    assert done.returncode == 0, done.stderr
    assert (target / "state").read_bytes() == a
    assert tree_state(target) == tree_state(root)


# -- item 6: a lost head is damage, never a fresh start ---------------------------------------

def test_a_sidecar_that_finds_the_head_deleted_restores_from_the_newest_snapshot(consul, prefix, tmp_path):
    root = tmp_path / "root"
    (root / "ca").mkdir(parents=True)
    (root / "ca" / "ca.crt").write_text("CA")
    (root / "certs").mkdir()
    (root / "certs" / "master1.crt").write_text("cert")
    env = statesync_env(consul.addr, prefix, root)
    assert _cli(env, "backup").returncode == 0
    (root / "zones.conf").write_text("zones")
    assert _cli(env, "backup").returncode == 0
    expected = tree_state(root)
    repo = node_repo([consul.addr], prefix)
    newest = repo.record()
    repo.store.delete(repo.layout.head)
    shutil.rmtree(root)
    root.mkdir()
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True)
    try:
        wait_for(lambda: (tmp_path / "sidecar.ready").exists(), 30, "the start-up restore", details=sidecar.output)
        assert tree_state(root) == expected
        head = repo.head().record
        assert head is not None and head.files == newest.files == 3
        assert "the head key is missing" in sidecar.output()
    finally:
        assert sidecar.stop() == 0
    # never a snapshot of the empty root over the history
    assert all(r.files == 3 or r.id < newest.id for r in repo.records())


def test_a_restore_without_a_head_key_takes_the_newest_snapshot_record(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a").write_text("one")
    env = statesync_env(consul.addr, prefix, root)
    assert _cli(env, "backup").returncode == 0
    (root / "a").write_text("two")
    assert _cli(env, "backup").returncode == 0
    repo = node_repo([consul.addr], prefix)
    repo.store.delete(repo.layout.head)
    target = tmp_path / "rebuilt"
    done = _cli(statesync_env(consul.addr, prefix, target), "restore")
    assert done.returncode == 0, done.stderr
    assert (target / "a").read_text() == "two"
    assert repo.head().record is None  # a restore only reads Consul


# -- item 6: a wiped root is not committed without an operator -----------------------------------

def test_a_root_wiped_while_the_sidecar_runs_is_not_committed(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}").write_text(f"file {i}")
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, lock_enabled="false")
    repo = node_repo([consul.addr], prefix)
    try:
        wait_for(lambda: repo.head().record is not None and repo.head().record.files == 20, 120, "the first commit")
        full = repo.head().record
        for i in range(20):
            (root / f"f{i}").unlink()
        wait_for(lambda: "lost 100 % of its files" in sidecar.output(), 120, "the refusal", details=sidecar.output)
        assert repo.head().record.id == full.id
        # the volume comes back: mirroring goes on
        for i in range(20):
            (root / f"f{i}").write_text(f"file {i} again")
        wait_for(lambda: repo.head().record.id != full.id, 120, "a commit once the files are back",
                 details=sidecar.output)
        assert repo.head().record.files == 20
    finally:
        assert sidecar.stop() == 0


def _backed_up_then_emptied(consul, prefix, tmp_path, files: int, kept: int) -> dict:
    """A tree of ``files`` small files, backed up, then all but ``kept`` of them deleted; its env."""
    root = tmp_path / "root"
    root.mkdir()
    for i in range(files):
        (root / f"f{i}").write_text("x" * 100)
    env = statesync_env(consul.addr, prefix, root)
    assert _cli(env, "backup").returncode == 0
    for i in range(kept, files):
        (root / f"f{i}").unlink()
    return env


def test_backup_refuses_a_tree_that_lost_most_of_its_files_unless_allowed(consul, prefix, tmp_path):
    env = _backed_up_then_emptied(consul, prefix, tmp_path, files=20, kept=1)
    refused = _cli(env, "backup")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "lost 95 % of its files" in refused.stderr
    assert "--allow-drop" in refused.stderr
    assert node_repo([consul.addr], prefix).record().files == 20
    assert _cli({**env, "STATESYNC_MAX_DROP": "0.96"}, "backup").returncode == 0


def test_backup_with_allow_drop_commits_a_deliberate_large_deletion(consul, prefix, tmp_path):
    env = _backed_up_then_emptied(consul, prefix, tmp_path, files=10, kept=0)
    done = _cli(env, "backup", "--allow-drop")
    assert done.returncode == 0, done.stderr
    assert node_repo([consul.addr], prefix).record().files == 0


def _record(files: int, size: int) -> Record:
    return Record(id="20261201T000000000000Z-abcd", node="n", created="", files=files, dirs=0, symlinks=0,
                  bytes=size, manifest_chunks=(), manifest_sha256="0" * 64, manifest_size=0)


@pytest.mark.parametrize("before, after, suspicious", [
    ((100, 10_000), (100, 10_000), False),
    ((100, 10_000), (11, 10_000), False),   # 89 % fewer files
    ((100, 10_000), (9, 10_000), True),     # 91 % fewer files
    ((100, 10_000), (100, 900), True),      # 91 % fewer bytes
    ((100, 10_000), (0, 0), True),
    ((0, 0), (0, 0), False),                # nothing to lose
    ((1, 10), (0, 0), True),
])
def test_a_drop_of_more_than_max_drop_of_files_or_bytes_is_suspicious(before, after, suspicious):
    assert (suspicious_drop(_record(*before), *after, max_drop=0.9) is not None) == suspicious


def test_no_drop_is_suspicious_without_a_previous_snapshot_or_with_max_drop_one():
    assert suspicious_drop(None, 0, 0, 0.9) is None
    assert suspicious_drop(_record(100, 100), 0, 0, 1.0) is None
