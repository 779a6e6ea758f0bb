"""Durable filesystem writes: what makes a rename or a new file survive a power cut."""
from __future__ import annotations

import ctypes
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that renames and new entries in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, owner: tuple[int, int] | None = None,
                 hidden: bool = False) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync of the directory.

    ``owner`` (uid, gid) gives the new file that owner before its mode is set (a chown clears
    set-id bits); ``hidden`` names the temp file ``.<name>.tmp-*``, so that a reader globbing
    ``*.json`` in the directory never picks it up. A failure removes the temp file.
    """
    name = f".{path.name}" if hidden else path.name
    tmp = path.with_name(f"{name}.tmp-{secrets.token_hex(3)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != owner:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


@contextmanager
def keeping_times(directory: Path) -> Iterator[None]:
    """Put ``directory``'s atime and mtime back after the block: for statesync's own files
    (lock, readiness marker) in the root, whose mtime snapshots record, so that they never
    make an unchanged tree look changed. Best effort: a process that does not own the
    directory may not set its times, and then the mtime moves."""
    try:
        before = os.stat(directory)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        try:
            os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:
            pass


def sync_filesystem(path: Path) -> None:
    """Make everything written to the filesystem holding ``path`` durable at once: syncfs(2),
    which since Linux 5.8 also reports a failed writeback (as OSError). Far cheaper than an
    fsync per file for a tree of thousands of files. Falls back to sync() where syncfs is missing."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS is None:
            os.sync()
        elif _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing ``length`` bytes of ``fd`` from ``offset`` to disk now,
    without waiting for them: sync_file_range(2) with SYNC_FILE_RANGE_WRITE.

    Nothing is durable by this: the sync that follows (``sync_filesystem``) still is the
    durability point and still reports a failed writeback. It only spreads the disk's work over
    the time the data is written instead of leaving all of it to that sync. A no-op where the
    call is missing or refused (another filesystem, an old kernel)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _find_syncfs():
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _find_syncfs()
_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h


def _find_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _find_sync_file_range()
