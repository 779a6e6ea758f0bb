"""One writer per root: an exclusive ``flock`` on ``<root>/.statesync-lock``.

Every command that writes the root or snapshots it (backup, restore, run) holds the lock
for as long as it works; a second one is refused at once (``run`` waits instead). The lock
belongs to an open file description, so the kernel drops it when its holder dies, however
it dies: a SIGKILLed holder never blocks the next one, and the holder text it left in the
file is simply overwritten. The file's name starts with ``.statesync-``: the scanner never
snapshots it and the restore's swap never moves it.

A holder removes the file as it lets go. Creating and removing it keeps the root
directory's atime and mtime as they were, because snapshots record the root's own mtime: a
lock that moved it would make every backup of an unchanged tree a new snapshot.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import structlog

from ..disk import LOCK_FILE
from ..errors import RootBusy, StatesyncError
from ..fsutil import keeping_times
from ..jsonload import loads

log = structlog.get_logger(__name__)

_NOBODY = object()  # "no holder announced yet": the holder itself may be unknown (None)
# A waiting `run` polls rather than blocking in flock(2): a blocked flock cannot be given up.
WAIT_STEP = 0.2


@dataclass(frozen=True)
class Holder:
    """What the lock file says about the process holding it."""

    pid: int
    command: str
    since: str
    host: str = ""

    def encode(self) -> bytes:
        return json.dumps({"pid": self.pid, "command": self.command, "since": self.since,
                           "host": self.host}).encode() + b"\n"

    @classmethod
    def decode(cls, raw: bytes) -> Holder:
        """Raise ValueError when ``raw`` is not a complete holder document."""
        doc = loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("pid"), int) or not isinstance(doc.get("command"), str):
            raise ValueError("not a holder document")
        return cls(doc["pid"], doc["command"], str(doc.get("since", "")), str(doc.get("host", "")))

    def describe(self) -> str:
        """``statesync run --role master (pid 1234, since 2026-12-01T15:00:00Z)``."""
        where = f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        since = f", since {self.since}" if self.since else ""
        return f"statesync {self.command} (pid {self.pid}{where}{since})"


def busy_message(root: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder else "another statesync process"
    return f"{root} is in use by {who}; stop it first (see README: restore runbook)"


@dataclass
class RootLock:
    """A held root lock; ``created``: the directories (the root, missing parents) that taking
    it created, deepest first."""

    root: Path
    fd: int
    key: tuple[int, int]
    created: list[Path]


# The roots this process holds, by (st_dev, st_ino) of the directory: a nested hold_root
# (restore() inside `statesync restore`, or inside `run`'s start-up) reuses the lock, since a
# second flock on a new open file description would conflict with our own.
_held: dict[tuple[int, int], RootLock] = {}


def _dir_key(root: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(root)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def holds(root: Path) -> bool:
    """True when this process holds the lock of ``root``."""
    key = _dir_key(root)
    return key is not None and key in _held


def read_holder(root: Path, tries: int = 25) -> Holder | None:
    """The holder named in ``root``'s lock file, or None when it cannot be told.

    The holder writes its text just after it takes the lock; a reader that comes in
    between sees an empty file for a moment, so an unreadable text is read again a few times.
    """
    for attempt in range(tries):
        try:
            fd = os.open(root / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                raw = os.read(fd, 4096)
            finally:
                os.close(fd)
            return Holder.decode(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            if attempt + 1 < tries:
                time.sleep(0.01)
    return None


def _make_root(root: Path) -> list[Path]:
    """Create ``root`` and any missing parents (mode as any new directory); return the
    directories this call created, deepest first."""
    if root.is_symlink() and not root.exists():
        raise StatesyncError(f"{root} is a dangling symlink")
    if root.exists():
        if not root.is_dir():
            raise StatesyncError(f"{root} exists and is not a directory")
        return []
    missing = [root]
    while not missing[-1].parent.exists() and missing[-1].parent != missing[-1]:
        missing.append(missing[-1].parent)
    created = []
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            _remove_if_empty(created)
            raise StatesyncError(f"cannot create {path}: {exc.strerror or exc}") from None
        created.insert(0, path)
    return created


def _open_lock(path: Path) -> tuple[int, bool]:
    """Open the lock file, creating it when absent: (fd, True when this call created it)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(50):  # bounded: each retry needs another process creating or removing the file
        try:
            return os.open(path, flags), False
        except FileNotFoundError:
            pass
        try:
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            continue
    raise StatesyncError(f"cannot lock {path.parent}: its lock file keeps appearing and vanishing")


def _try_take(root: Path, command: str) -> tuple[int, bool, Holder | None]:
    """Take the lock without waiting: (fd, made, None), or (-1, False, holder) when somebody
    holds it; ``made``: this call created the lock file."""
    path = root / LOCK_FILE
    for _ in range(50):  # bounded: each retry needs a holder that removed the file meanwhile
        fd, made = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return -1, False, read_holder(root)
        except BaseException:
            os.close(fd)
            raise
        # The previous holder removes the file before it lets go; a lock on that removed
        # inode would exclude nobody, so it counts only while the name still leads to it.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            holder = Holder(os.getpid(), command, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            socket.gethostname())
            # Written in place, not by rename: the lock lives on this inode. Not fsynced:
            # the text only matters while the holder lives.
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder.encode(), 0)
            return fd, made, None
        os.close(fd)
    raise StatesyncError(f"cannot lock {root}: its lock file keeps being replaced")


@contextmanager
def hold_root(root: Path, command: str, create: bool = False, wait: bool = False) -> Iterator[RootLock]:
    """Hold the lock of ``root`` for the ``with`` block.

    ``command`` names the holder for the others (``backup``, ``run --role master``).
    ``create``: make ``root`` (and missing parents) first; if the block then fails and they
    hold nothing (the lock file goes first), they are removed again: rmdir, never more.
    ``wait``: wait for the holder to go (logged) instead of raising RootBusy.
    Raises RootBusy or StatesyncError.
    """
    key = _dir_key(root)
    if key is not None and key in _held:
        yield _held[key]
        return
    created = _make_root(root) if create else []
    if not root.is_dir():
        raise StatesyncError(f"{root} is not a directory")
    lock = None
    try:
        lock = _acquire(root, command, wait, created)
    finally:
        if lock is None:
            _remove_if_empty(created)
    _held[lock.key] = lock
    failed = True
    try:
        yield lock
        failed = False
    finally:
        del _held[lock.key]
        _release(lock, failed)


def _acquire(root: Path, command: str, wait: bool, created: list[Path]) -> RootLock:
    announced: object = _NOBODY
    before = os.stat(root)
    while True:
        try:
            fd, made, holder = _try_take(root, command)
        except OSError as exc:
            raise StatesyncError(f"cannot lock {root}: {exc.strerror or exc}") from None
        if fd >= 0:
            break
        if not wait:
            raise RootBusy(busy_message(root, holder))
        if holder != announced:
            log.warning("waiting for the root lock", root=str(root),
                        holder=holder.describe() if holder else "another statesync process")
            announced = holder
        time.sleep(WAIT_STEP)
        before = os.stat(root)
    if announced is not _NOBODY:
        log.info("root lock acquired", root=str(root))
    if made:
        # the lock file is ours: the root keeps the mtime it had before it appeared
        try:
            os.utime(root, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:
            pass
    st = os.stat(root)
    return RootLock(root, fd, (st.st_dev, st.st_ino), created)


def _release(lock: RootLock, failed: bool) -> None:
    path = lock.root / LOCK_FILE
    try:
        # Emptied first: a SIGKILLed holder is the only one that leaves its text behind.
        os.ftruncate(lock.fd, 0)
        try:
            # Removed while still held (see _try_take for the taker that opened it meanwhile).
            if os.path.samestat(os.fstat(lock.fd), os.stat(path, follow_symlinks=False)):
                with keeping_times(lock.root):
                    os.unlink(path)
        except FileNotFoundError:
            pass
        if failed:
            _remove_if_empty(lock.created)
    finally:
        os.close(lock.fd)


def _remove_if_empty(dirs: list[Path]) -> None:
    """rmdir each of ``dirs`` (deepest first): succeeds only for an empty one, never more."""
    for path in dirs:
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.EBUSY):
                log.warning("could not remove a directory this process created", path=str(path), error=str(exc))
            return
