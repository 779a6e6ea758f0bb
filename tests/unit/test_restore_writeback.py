"""A restored file's writeback starts while it is written (issue 26, item 5): the tree's one
sync then waits for the tail, and nothing about the file changes."""
from __future__ import annotations

import os

from statesync import fsutil
from statesync.restore import apply
from statesync.snapshot.manifest import FILE, Entry

MIB = 1 << 20


def _entry(size: int) -> Entry:
    return Entry(path="icinga2.state", type=FILE, mode=0o600, uid=0, gid=0, mtime_ns=1_700_000_000_123_456_789,
                 size=size)


def test_a_large_file_is_written_whole_and_its_writeback_started_for_each_full_stretch_behind_the_writing(
        tmp_path, monkeypatch):
    pieces = [os.urandom(MIB) for _ in range(2 * apply.WRITEBACK_BYTES // MIB + 3)]
    started: list[tuple[int, int]] = []

    def recording(fd: int, offset: int, length: int) -> None:
        assert os.fstat(fd).st_size >= offset + length  # only what was written already
        started.append((offset, length))
        fsutil.start_writeback(fd, offset, length)
    monkeypatch.setattr(apply, "start_writeback", recording)
    apply._write_file(str(tmp_path / "icinga2.state"), _entry(len(pieces) * MIB), iter(pieces), None)
    assert (tmp_path / "icinga2.state").read_bytes() == b"".join(pieces)
    st = os.stat(tmp_path / "icinga2.state")
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o600, 1_700_000_000_123_456_789)
    assert started == [(0, apply.WRITEBACK_BYTES), (apply.WRITEBACK_BYTES, apply.WRITEBACK_BYTES)]


def test_a_small_file_is_left_to_the_one_sync_of_the_tree(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(apply, "start_writeback", lambda *a: started.append(a))
    apply._write_file(str(tmp_path / "ca.crt"), _entry(4096), [b"x" * 4096], None)
    assert started == []


def test_starting_writeback_where_the_kernel_refuses_it_is_no_error():
    r, w = os.pipe()
    try:
        fsutil.start_writeback(w, 0, MIB)  # ESPIPE: sync_file_range is for files
    finally:
        os.close(r)
        os.close(w)
