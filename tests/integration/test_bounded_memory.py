"""Peak memory of `statesync backup` and `statesync restore` does not grow with the size of a file.

The file is random (incompressible: the worst case, every byte stored as it is) and large;
nine versions of it are committed, each rewriting part of it, and the peak RSS (VmHWM) of
the backup and restore processes is measured while they run. STATESYNC_BIG_FILE_MIB sets
the size (default 1024: the issue's 1 GiB, 9 versions kept).
"""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from statesync.snapshot import chunking
from statesync.tree.globs import PathFilter
from statesync.tree.scan import Scanner

from ..sidecar import statesync_env
from ..support import statesync_cmd

MIB = 1 << 20
SIZE_MIB = int(os.environ.get("STATESYNC_BIG_FILE_MIB", "1024"))
VERSIONS = 9
LIMIT_MB = 256


def _peak_mb(args: tuple[str, ...], env: dict) -> float:
    """Run statesync and return its peak resident set (VmHWM, MB), read until it exits."""
    proc = subprocess.Popen(statesync_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    return peak / 1000


def _write_random(path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // (16 * MIB)):
            f.write(os.urandom(16 * MIB))


def _rewrite_part(path, version: int) -> None:
    """A new version: 8 MiB rewritten at a place of its own, as a dump rewrites records."""
    with open(path, "r+b") as f:
        f.seek((version * 37 * MIB) % (SIZE_MIB * MIB - 8 * MIB))
        f.write(os.urandom(8 * MIB))


def test_pieces_read_through_pread_cut_and_address_a_file_as_address_does_in_memory(tmp_path):
    for size in (0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5):
        data = os.urandom(size)
        path = tmp_path / f"f{size}"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            read = chunking.Read()
            for piece in chunking.pieces(lambda offset, n, fd=fd: os.pread(fd, n, offset), 4096):
                read.add(piece, chunking.sha256(piece))
        finally:
            os.close(fd)
        whole, pieces = chunking.address(data, 4096)
        assert (read.end().digest, read.chunks, read.size) == (whole, tuple(d for d, _ in pieces), size)


def test_a_scan_keeps_no_bytes_of_chunks_its_sink_has_written(tmp_path):
    (tmp_path / "big").write_bytes(os.urandom(40 * 4096))
    (tmp_path / "small").write_bytes(b"hello")
    handed = {}
    scan = Scanner(tmp_path, PathFilter(), 4096).scan(set(), sink=handed.__setitem__, written=handed.__contains__)
    assert len(handed) == 41
    assert scan.new_chunks == {}  # the sink's ``written`` holds them now
    kept = Scanner(tmp_path, PathFilter(), 4096).scan(set(), sink=handed.__setitem__)
    assert all(isinstance(v, bytes) for v in kept.new_chunks.values())  # nobody said they were written


@pytest.mark.serial
@pytest.mark.consul
@pytest.mark.slow
def test_backup_and_restore_of_a_large_file_stay_within_256_mb_of_memory(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    big = root / "icinga2.state"
    _write_random(big, SIZE_MIB * MIB)
    env = statesync_env(f"http://{consul.addr}", prefix, root, plaintext=False, keep=9)
    peaks = []
    for version in range(VERSIONS):
        if version:
            _rewrite_part(big, version)
        peaks.append(_peak_mb(("backup",), env))
    digest = subprocess.run(["sha256sum", str(big)], capture_output=True, text=True, check=True).stdout.split()[0]
    big.unlink()
    restored = tmp_path / "restored"
    restore_peak = _peak_mb(("restore",), {**env, "STATESYNC_ROOT": str(restored)})
    got = subprocess.run(["sha256sum", str(restored / "icinga2.state")], capture_output=True, text=True,
                         check=True).stdout.split()[0]
    assert got == digest
    print(f"\n{SIZE_MIB} MiB random file: backup peak RSS {', '.join(f'{p:.0f}' for p in peaks)} MB, "
          f"restore peak RSS {restore_peak:.0f} MB")
    assert max(peaks) <= LIMIT_MB and restore_peak <= LIMIT_MB, (peaks, restore_peak)


@pytest.mark.consul
def test_a_restore_holds_only_the_chunks_its_batch_looks_ahead_to_and_fetches_a_far_repeat_again(
        consul, prefix, tmp_path, make_cfg, repo_for):
    from statesync.restore.feed import ChunkFeed
    from statesync.snapshot.manifest import FILE, tree_order
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    shared = b"the same bytes at both ends of the tree\n" * 10
    (root / "d" / "a-first").write_bytes(shared)
    for i in range(40):
        (root / "d" / f"m{i:02d}").write_bytes(os.urandom(1000))
    (root / "d" / "z-last").write_bytes(shared)
    subprocess.run(statesync_cmd("backup"), env=statesync_env(f"http://{consul.addr}", prefix, root, plaintext=False, keep=9), check=True, capture_output=True)
    repo = repo_for(make_cfg(root=str(root)))
    record = repo.record()
    fetched: list[set[str]] = []
    fetch = repo.fetch_chunks
    repo.fetch_chunks = lambda digests, *a, **kw: fetched.append(set(digests)) or fetch(digests, *a, **kw)
    manifest = repo.manifest(record)
    feed = ChunkFeed(repo, record, manifest, batch_bytes=4000)
    files = [e for e in sorted(manifest.entries, key=lambda e: tree_order(e.path)) if e.type == FILE]
    for e in files:
        assert b"".join(feed.file_chunks(e)) == (root / e.path).read_bytes()
        assert sum(map(len, feed._cache.values())) <= 4000 + 1000
    first = files[0].chunks[0]
    assert [e.path for e in files][::41] == ["d/a-first", "d/z-last"]
    assert sum(first in batch for batch in fetched) == 2  # held for neither the 40 files between
    assert b"".join(feed.file_chunks(files[5])) == (root / files[5].path).read_bytes()  # asked out of order


@pytest.mark.consul
def test_a_restore_fetches_the_files_of_a_tree_in_one_batch_however_many_directories_lie_between_them(
        consul, prefix, tmp_path, make_cfg, repo_for):
    from statesync.restore.feed import ChunkFeed
    from statesync.snapshot.manifest import FILE, tree_order
    root = tmp_path / "root"
    for i in range(30):
        (root / f"d{i:02d}" / "e" / "f").mkdir(parents=True)
        (root / f"d{i:02d}" / "e" / "f" / "x").write_bytes(os.urandom(100))
        for k in range(100):
            (root / f"d{i:02d}" / f"empty{k:03d}").mkdir()
    subprocess.run(statesync_cmd("backup"), env=statesync_env(f"http://{consul.addr}", prefix, root, plaintext=False, keep=9), check=True, capture_output=True)
    repo = repo_for(make_cfg(root=str(root)))
    record = repo.record()
    manifest = repo.manifest(record)
    fetched: list[set[str]] = []
    fetch = repo.fetch_chunks
    repo.fetch_chunks = lambda digests, *a, **kw: fetched.append(set(digests)) or fetch(digests, *a, **kw)
    feed = ChunkFeed(repo, record, manifest)
    for e in sorted(manifest.entries, key=lambda e: tree_order(e.path)):
        if e.type == FILE:
            assert b"".join(feed.file_chunks(e)) == (root / e.path).read_bytes()
    assert [len(batch) for batch in fetched] == [30]
