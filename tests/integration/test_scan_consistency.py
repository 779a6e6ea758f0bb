"""A snapshot never holds what the tree did not hold: a change inside one timestamp granule is
not missed by the scan cache, and a file rewritten while it is read is never committed torn."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statesync.tree import scan
from statesync.tree.globs import PathFilter
from statesync.tree.scan import Scanner

from ..sidecar import statesync_env
from ..support import statesync_cmd, stop_process

SIZE = 4 << 20  # large enough that reading it takes as long as a write of it
VERSIONS = range(1, 9)  # version v of the file is SIZE bytes of value v
WHOLE = {hashlib.sha256(bytes([v]) * SIZE).hexdigest(): v for v in (0, *VERSIONS)}

# Rewrites the file in place, version after version, each one write() of the whole file.
WRITER = """
import itertools, os, sys
path, size = sys.argv[1], int(sys.argv[2])
versions = [bytes([v]) * size for v in range(1, 9)]
fd = os.open(path, os.O_WRONLY)
print("writing", flush=True)
for data in itertools.cycle(versions):
    os.pwrite(fd, data, 0)
"""


@pytest.fixture
def coarse_dir(tmp_path):
    """A ramfs: it stamps files from the kernel's clock tick, as ext4, XFS and tmpfs did before
    Linux 6.13 (and FAT, ext3 and HFS+ still do, by the second): two writes in one tick leave
    size, mtime and ctime alike. Mounting needs root: as another user, through `sudo -n`; a run
    that can do neither fails, as a test that cannot find what it needs does, never skips."""
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n", "--"]
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    mount = subprocess.run([*sudo, "mount", "-t", "ramfs", "-o", "mode=0777", "statesync-test", str(mnt)],
                           capture_output=True, text=True, timeout=30)
    if mount.returncode != 0:
        pytest.fail(f"cannot mount a ramfs (needs root or passwordless sudo): {mount.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run([*sudo, "umount", "-l", str(mnt)], check=True, timeout=30)


def _signature(path: Path) -> tuple:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode, st.st_uid, st.st_gid


def test_a_same_size_rewrite_within_one_timestamp_tick_is_seen_by_the_next_scan(coarse_dir):
    root = coarse_dir / "root"
    root.mkdir()
    path = root / "icinga2.state"
    old, new = b"A" * 4096, b"B" * 4096
    for _ in range(200):  # until both writes fall into one tick: almost always the first try
        path.write_bytes(old)
        scanner = Scanner(root, PathFilter(), 1 << 18)
        first = scanner.scan(set()).manifest.by_path()["icinga2.state"]
        before = _signature(path)
        with open(path, "r+b") as fh:  # in place: same inode, same size
            fh.write(new)
        if _signature(path) == before:
            break
    else:
        pytest.fail("no rewrite fell into the tick of the write before it in 200 tries")
    assert first.sha256 == hashlib.sha256(old).hexdigest()
    # size, mtime, ctime, inode, mode and owner are all as the first scan saw them
    second = scanner.scan(set()).manifest.by_path()["icinga2.state"]
    assert second.sha256 == hashlib.sha256(new).hexdigest()


def test_an_unchanged_file_is_read_again_only_until_its_timestamps_are_older_than_a_scan_s_start(tmp_path,
                                                                                                   monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"settled")
    scanner = Scanner(root, PathFilter(), 1 << 18)
    # "Soon after the write" must hold however slowly a loaded machine gets to the first two scans:
    # for them the window is an hour; then the real one, waited out.
    real = scan.RACY_NS
    monkeypatch.setattr(scan, "RACY_NS", 3600 * 10**9)
    assert scanner.scan(set()).files_read == 1
    assert scanner.scan(set()).files_read == 1  # stamped within RACY_NS of that scan's start
    monkeypatch.setattr(scan, "RACY_NS", real)
    time.sleep(real / 1e9 + 0.2)
    assert scanner.scan(set()).files_read == 1  # the scan before still began too soon after it
    assert scanner.scan(set()).files_read == 0  # this one began long after: the signature holds


@pytest.fixture
def writer(tmp_path):
    """Start a process that rewrites ``path`` in place as fast as it can; yields a starter."""
    procs: list[subprocess.Popen] = []

    def start(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(SIZE)], stdout=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.05)
        return proc

    yield start
    for proc in procs:
        stop_process(proc, 10)


def test_a_file_rewritten_in_place_while_scanned_is_only_ever_committed_whole(tmp_path, writer):
    root = tmp_path / "root"
    root.mkdir()
    path = root / "modified-attributes.conf"
    path.write_bytes(bytes([0]) * SIZE)
    scanner = Scanner(root, PathFilter(), 1 << 18)
    assert WHOLE[scanner.scan(set()).manifest.by_path()[path.name].sha256] == 0
    fresh = Scanner(root, PathFilter(), 1 << 18)  # has no previous version to fall back on
    writer(path)
    seen = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline or (not seen and time.monotonic() < deadline + 120):
        for s in (scanner, fresh):
            entry = s.scan(set()).manifest.by_path().get(path.name)
            if entry is not None:
                assert entry.size == SIZE
                assert entry.sha256 in WHOLE, "a torn read was committed"
                seen.append(WHOLE[entry.sha256])
    assert seen, "no scan ran"


@pytest.mark.consul
def test_backup_of_a_file_that_never_reads_whole_keeps_its_previous_version_and_says_so(consul, prefix, tmp_path,
                                                                                         writer):
    root = tmp_path / "root"
    root.mkdir()
    path = root / "icinga2.state"
    path.write_bytes(bytes([0]) * SIZE)
    (root / "zones.conf").write_text("one\n")
    env = statesync_env(f"http://{consul.addr}", prefix, root)
    subprocess.run(statesync_cmd("backup"), env=env, check=True, capture_output=True, timeout=120)
    (root / "zones.conf").write_text("two\n")
    proc = writer(path)
    backup = subprocess.run(statesync_cmd("backup"), env=env, capture_output=True, text=True, timeout=120)
    stop_process(proc, 10)
    assert backup.returncode == 0, backup.stderr
    target = tmp_path / "restored"
    subprocess.run(statesync_cmd("restore"), env={**env, "STATESYNC_ROOT": str(target)}, check=True,
                   capture_output=True, timeout=120)
    assert (target / "zones.conf").read_text() == "two\n"
    content = (target / "icinga2.state").read_bytes()
    assert len(content) == SIZE and content == content[:1] * SIZE, "a torn read was committed"
    if content[0] == 0:  # the previous version: the backup must have said why
        assert "icinga2.state" in backup.stderr and "previous version" in backup.stderr
