"""Writing a snapshot back under --root: fetch and verify everything, stage, then swap.

Nothing of --root's content is touched until every chunk has been fetched and verified:
the chunks stream, each verified, into a staging directory inside --root (the same filesystem,
even when --root is a volume mount point) and fsynced. The swap (``swap.py``) then moves
the old top-level entries, or with ``roots`` the named subtrees, into
``.statesync-aside/<timestamp>/`` and the staged ones into place, under a journal: a swap
interrupted by a crash is rolled forward by the next ``recover()``, so --root ends up
entirely old (on any error) or entirely new.
"""
from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from ..disk import INTERNAL_PREFIX, QUARANTINE_DIR, STAGING_PREFIX, STATE_DIRS
from ..errors import RestoreRefused, StatesyncError, UnsafePath
from ..fsutil import start_writeback, sync_filesystem
from ..repo.repository import Repo
from ..snapshot.manifest import DIR, FILE, SYMLINK, Entry, Manifest, tree_ordered
from ..snapshot.record import Record
from ..tree.dirfd import DIR_FLAGS, DirChain, open_below
from .feed import ChunkFeed
from .rootlock import hold_root, holds
from .swap import ASIDE_DIR, JOURNAL, exists, recover, swap  # noqa: F401 (ASIDE_DIR, JOURNAL: the interface)
from .swap import remove_tree as _remove_tree

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RestoreResult:
    record: Record
    files: int
    bytes: int
    entries: int
    aside: Path | None = None


def user_entries(root: Path, subtrees: tuple[str, ...] = ()) -> list[str]:
    """Top-level names under ``root`` that are not statesync's own, or of ``subtrees`` (the named
    roots) those that exist; [] when root is absent."""
    if subtrees:
        return [n for n in subtrees if exists(root / n)]
    try:
        return sorted(n for n in os.listdir(root) if not n.startswith(INTERNAL_PREFIX))
    except FileNotFoundError:
        return []


def has_icinga_state(state_dir: Path) -> bool:
    """True when ``state_dir`` (the root, or with roots its subtree named state) holds Icinga 2
    state: a ca/ or a certs/ with anything in it (or either name taken by something else), or
    the guard's quarantine.

    Empty ones are no state: the official image from 2.16 on ships an empty certs/ in the
    /data the engine copies into a new volume, and a master whose volume was lost would
    otherwise skip the restore and let node setup make a new CA (docs/ICINGA_VERSIONS.md).
    A certs/ the guard emptied is state: that node is to enrol again under the new CA, and a
    restore would bring back the certificates of the old one. An unreadable one counts as
    state: never restore over what cannot be looked at."""
    if exists(state_dir / QUARANTINE_DIR):
        return True
    for name in STATE_DIRS:
        try:
            with os.scandir(state_dir / name) as entries:
                if next(entries, None) is not None:
                    return True
        except FileNotFoundError:
            continue
        except OSError:  # not a directory, or unreadable
            return True
    return False


def fetch_verified(repo: Repo, record: Record) -> tuple[Manifest, Callable[[Entry], bytes]]:
    """Fetch the manifest and every chunk of ``record``, verified and decrypted.

    Returns the manifest and a function giving a file entry's bytes. Raises
    CorruptData/UnsafePath, or EncryptionKeyError for a missing or wrong key.
    """
    manifest = repo.manifest(record)
    contents = repo.contents(record, manifest)
    return manifest, lambda entry: repo.file_bytes(entry, contents)


def restore(repo: Repo, record: Record, root: Path, force: bool = False,
            progress: Progress | None = None, subtrees: tuple[str, ...] = (),
            manifest: Manifest | None = None) -> RestoreResult:
    """Restore ``record`` into ``root``, holding the root lock (taken here unless this process
    holds it already: `statesync restore` and `run` take it first).

    ``root`` must be absent or empty unless ``force``, in which case its content is moved
    into ``.statesync-aside/<timestamp>/`` first. With ``subtrees`` (root-relative paths, the
    setting roots) only those are emptiness-checked, moved aside and put in place; the rest of
    root, and root's own metadata, stay as they are. ``manifest``, a part of the record's (a
    partial restore, ``partial.select``), is written instead of the whole, and root keeps its
    own metadata. Raises RootBusy, RestoreRefused, CorruptData,
    UnsafePath, or StatesyncError for I/O failures; in every case ``root`` is left as it was.
    """
    if root.exists() and not root.is_dir():
        raise RestoreRefused(f"{root} exists and is not a directory")
    # A root this call creates is removed again by hold_root if the restore fails and
    # nothing but the lock file is in it: never with anything in it that we did not make.
    with hold_root(root, "restore", create=True):
        recover(root)
        existing = user_entries(root, subtrees)
        if existing and not force:
            what = f"{root} is not empty ({len(existing)} entries)" if not subtrees else (
                f"{', '.join(str(root / n) for n in existing)} exist{'s' if len(existing) == 1 else ''}")
            raise RestoreRefused(f"{what}; use --force to move them aside")
        partial = manifest is not None
        manifest = manifest if partial else repo.manifest(record)
        feed = ChunkFeed(repo, record, manifest)
        staging: Path | None = None
        try:
            _remove_stale_staging(root)
            # Chunks are verified while they are staged: a bad one must not leave even a new mtime.
            times = os.stat(root)
            candidate = root / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
            candidate.mkdir(mode=0o700)
            staging = candidate  # ours once mkdir made it: never clean up a directory we did not make
            try:
                write_tree(staging, manifest, feed.file_chunks, progress, feed.order)
            finally:
                feed.close()  # no fetch outlives the tree it was for, written or failed
            names = [n for n in subtrees if exists(staging / n)] if subtrees else _top_names(manifest)
            aside = swap(root, staging, existing, names)
        except BaseException as exc:
            if staging is not None:
                _remove_tree(staging)
                with contextlib.suppress(OSError):
                    os.utime(root, ns=(times.st_atime_ns, times.st_mtime_ns))
            if isinstance(exc, OSError):
                raise StatesyncError(f"restore failed, {root} left as it was: {_describe(exc)}") from None
            raise
        try:
            if not subtrees and not partial:  # else root holds more than what was restored
                restore_root_metadata(root, manifest)
        except OSError as exc:  # the tree is in place already: say so rather than fail
            log.warning("restored, but the root did not take its recorded owner, mode or mtime", root=str(root),
                        error=_describe(exc))
    return RestoreResult(record, manifest.file_count, manifest.total_bytes, len(manifest.entries), aside)


def _top_names(manifest: Manifest) -> list[str]:
    return sorted({e.path.split("/")[0] for e in manifest.entries})


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _remove_stale_staging(root: Path) -> None:
    """Remove staging directories that a killed restore left behind. Only the root lock's
    holder may: without the lock, one of them may be another restore's work in progress."""
    if not holds(root):
        return
    for name in os.listdir(root):
        if name.startswith(STAGING_PREFIX):
            _remove_tree(root / name)


# -- writing the staged tree ---------------------------------------------------------

def write_tree(target: Path, manifest: Manifest, file_bytes: Callable[[Entry], bytes | Iterable[bytes]],
               progress: Progress | None = None, order: tuple[Entry, ...] | list[Entry] | None = None) -> None:
    """Create every entry of ``manifest`` under the empty directory ``target``; ``file_bytes``
    gives a file entry's verified content, whole or as pieces (``ChunkFeed.file_chunks``);
    ``order``, the entries already in tree order (``tree_ordered``), spares sorting them again.

    Entries are written depth first (``tree_order``), each relative to its parent's directory
    descriptor, so that no path the OS sees is longer than one name: any depth and any path
    length restore. A directory gets its metadata once its subtree is written, so that writing
    its children does not disturb its mtime. Raises OSError naming the entry's path,
    CorruptData or UnsafePath.
    """
    as_root = os.geteuid() == 0
    owners: dict[tuple, tuple[int, int]] = {}  # one user database lookup per owner, not per file

    def owner(e: Entry) -> tuple[int, int]:
        key = (e.user, e.group, e.uid, e.gid)
        if key not in owners:
            if len(owners) >= 1024:  # a forged manifest may give every entry an owner of its own
                owners.clear()
            owners[key] = owner_of(e)
        return owners[key]

    def finish_dir() -> None:
        nonlocal where
        d = dirs.pop()
        where = d.path
        chain.leave()
        _set_metadata(chain.fd, d.path.rpartition("/")[2], d, owner(d) if as_root else None)

    files = written = 0
    root_fd = os.open(target, DIR_FLAGS)
    chain = DirChain(root_fd)
    dirs: list[Entry] = []  # the entries of the directories on the chain, below target
    where = ""  # the path being written, for the error message
    try:
        for e in tree_ordered(manifest.entries) if order is None else order:
            parent, _, name = e.path.rpartition("/")
            while chain.rel != parent and dirs:
                finish_dir()
            if chain.rel != parent:
                raise UnsafePath(f"manifest path {e.path!r} does not lie below a directory of the snapshot")
            fd = chain.fd
            where = e.path
            if e.type == DIR:
                os.mkdir(name, 0o700, dir_fd=fd)
                chain.enter(name, e.path)
                dirs.append(e)
            elif e.type == FILE:
                if e.link:
                    _link(root_fd, e.link, name, fd)
                else:
                    _write_file(name, e, file_bytes(e), owner(e) if as_root else None, dir_fd=fd)
                files += 1
                written += e.size
                if progress:
                    progress(files, written)
            elif e.type == SYMLINK:
                os.symlink(e.target, name, dir_fd=fd)
                if as_root:
                    os.chown(name, *owner(e), dir_fd=fd, follow_symlinks=False)
                os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=fd, follow_symlinks=False)
        while dirs:
            finish_dir()
    except OSError as exc:
        # The OS saw one name relative to a descriptor: name the whole path instead.
        raise OSError(exc.errno, exc.strerror, where or str(target)) from None
    finally:
        chain.close()
        os.close(root_fd)
    # Durable before the swap: one sync of the filesystem instead of an fsync per file and
    # directory (10,000 fsyncs take seconds). Raises OSError when the writeback failed.
    sync_filesystem(target)


def _set_metadata(dir_fd: int, name: str, e: Entry, owner: tuple[int, int] | None) -> None:
    """Give the directory ``name`` in ``dir_fd`` the owner (None: leave it), mode and mtime of ``e``."""
    if owner is not None:
        os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
    os.chmod(name, e.mode, dir_fd=dir_fd)  # a directory this restore made: no symlink to follow
    os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


def _link(root_fd: int, first: str, name: str, dir_fd: int) -> None:
    """Make ``name`` in ``dir_fd`` a hard link of the file ``first`` (root-relative), written
    earlier by this walk."""
    parent, _, first_name = first.rpartition("/")
    src = open_below(root_fd, parent)
    try:
        os.link(first_name, name, src_dir_fd=src, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        if src != root_fd:
            os.close(src)


def restore_root_metadata(root: Path, manifest: Manifest) -> None:
    """Give ``root`` the owner (when run as root), mode and mtime the snapshot recorded for the
    root directory itself; nothing for a snapshot written before they were recorded. To be
    called once nothing else changes the root: every entry made or moved in it sets its mtime."""
    e = manifest.root
    if e is None:
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, *owner_of(e))
        os.fchmod(fd, e.mode)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
    finally:
        os.close(fd)


def owner_of(e: Entry) -> tuple[int, int]:
    """The uid/gid to give ``e`` here: by recorded name where this system knows it
    (nagios on Debian, icinga elsewhere), else the recorded numbers."""
    uid, gid = e.uid, e.gid
    if e.user:
        try:
            uid = pwd.getpwnam(e.user).pw_uid
        except KeyError:
            pass
    if e.group:
        try:
            gid = grp.getgrnam(e.group).gr_gid
        except KeyError:
            pass
    return uid, gid


# A file's bytes written before the disk is asked to start on them (fsutil.start_writeback).
# Smaller files are left to the one sync of the tree: a call per file would cost more than it saves.
WRITEBACK_BYTES = 8 << 20


def _write_file(path: str, e: Entry, data: bytes | Iterable[bytes], owner: tuple[int, int] | None,
                dir_fd: int | None = None) -> None:
    """Create ``path`` (relative to ``dir_fd`` when given) with ``data``, the ``owner`` (uid, gid;
    None: leave it), mode and mtime of ``e``. Not synced: write_tree syncs the whole tree once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        flushed = written = 0
        for piece in (data,) if isinstance(data, bytes) else data:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
            written += len(piece)
            if written - flushed >= WRITEBACK_BYTES:
                # The disk writes this part while the rest is fetched and written: the final sync
                # of the tree then waits for the tail only, not for a whole large file.
                start_writeback(fd, flushed, written - flushed)
                flushed = written
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, e.mode)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
    finally:
        os.close(fd)
