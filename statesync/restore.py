"""Writing a snapshot back under --root: fetch and verify everything, stage, then move into place.

Nothing under --root is touched until every chunk has been fetched and verified.
The files are written into a staging directory inside --root (the same filesystem,
even when --root is a volume mount point), fsynced, and only then renamed into
place. Any failure removes the staging directory and leaves --root as it was.
"""
from __future__ import annotations

import errno
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import structlog

from . import chunking
from .errors import CorruptData, RestoreRefused, StatesyncError, UnsafePath
from .manifest import DIR, FILE, SYMLINK, Entry, Manifest
from .repo import Repo
from .scan import INTERNAL_PREFIX
from .snapshot import Record

log = structlog.get_logger(__name__)

STAGING_PREFIX = INTERNAL_PREFIX + "staging-"


@dataclass(frozen=True)
class RestoreResult:
    record: Record
    files: int
    bytes: int
    entries: int


def root_is_empty(root: Path) -> bool:
    """True when ``root`` is absent or holds nothing but statesync's own leftovers."""
    try:
        return all(name.startswith(INTERNAL_PREFIX) for name in os.listdir(root))
    except FileNotFoundError:
        return True


def restore(repo: Repo, record: Record, root: Path) -> RestoreResult:
    """Restore ``record`` into the empty or absent ``root``.

    Raises RestoreRefused when ``root`` holds content, CorruptData/UnsafePath when the
    snapshot fails verification, StatesyncError when writing fails (root left as it was).
    """
    if not root_is_empty(root):
        raise RestoreRefused(f"{root} is not empty; restore writes only into an empty or absent root")
    manifest = repo.manifest(record)
    contents = repo.fetch_chunks(manifest.chunk_refs())
    created_root = not root.exists()
    staging = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        write_tree(staging, manifest, contents)
        _move_into_place(staging, root, manifest)
    except OSError as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created_root:
            shutil.rmtree(root, ignore_errors=True)
        raise StatesyncError(f"restore failed, {root} left as it was: {_describe(exc)}") from None
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created_root:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return RestoreResult(record, manifest.file_count, manifest.total_bytes, len(manifest.entries))


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return f"{exc.strerror or exc} ({exc.filename or ''})".strip()


def write_tree(target: Path, manifest: Manifest, contents: dict[str, bytes]) -> None:
    """Create every entry of ``manifest`` under the empty directory ``target``.

    Metadata of directories is applied last, deepest first, so that writing their
    children does not disturb their mtimes. Raises OSError or UnsafePath.
    """
    as_root = os.geteuid() == 0
    entries = sorted(manifest.entries, key=lambda e: e.path)
    for e in entries:
        path = _safe_join(target, e.path)
        if e.type == DIR:
            path.mkdir(mode=0o700)
        elif e.type == FILE:
            _write_file(path, e, contents)
        elif e.type == SYMLINK:
            os.symlink(e.target, path)
            if as_root:
                os.lchown(path, *_owner(e))
            os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
    for e in sorted((e for e in entries if e.type == DIR), key=lambda e: e.path.count("/"), reverse=True):
        path = target / e.path
        if as_root:
            os.lchown(path, *_owner(e))
        os.chmod(path, e.mode)
        os.utime(path, ns=(e.mtime_ns, e.mtime_ns))
        _fsync_dir(path)
    _fsync_dir(target)


def _safe_join(base: Path, rel: str) -> Path:
    path = base / rel
    parent = path.parent
    # Paths were validated when the manifest was decoded; this guards the filesystem
    # itself: every parent must be a real directory we created, never a link.
    if parent != base and (parent.is_symlink() or not parent.is_dir()):
        raise UnsafePath(f"manifest path {rel!r} does not lie below a directory of the snapshot")
    return path


def _owner(e: Entry) -> tuple[int, int]:
    uid, gid = e.uid, e.gid
    if e.user:
        try:
            import pwd
            uid = pwd.getpwnam(e.user).pw_uid
        except KeyError:
            pass
    if e.group:
        try:
            import grp
            gid = grp.getgrnam(e.group).gr_gid
        except KeyError:
            pass
    return uid, gid


def _write_file(path: Path, e: Entry, contents: dict[str, bytes]) -> None:
    data = chunking.join(e.sha256, [contents[d] for d in e.chunks])
    if len(data) != e.size:
        raise CorruptData(f"{e.path}: content is {len(data)} bytes, the manifest says {e.size}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if os.geteuid() == 0:
            os.fchown(fd, *_owner(e))
        os.fchmod(fd, e.mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.utime(path, ns=(e.mtime_ns, e.mtime_ns))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(staging: Path, root: Path, manifest: Manifest) -> None:
    top = sorted({e.path.split("/")[0] for e in manifest.entries})
    moved: list[str] = []
    try:
        for name in top:
            os.rename(staging / name, root / name)
            moved.append(name)
    except OSError:
        for name in reversed(moved):
            os.rename(root / name, staging / name)
        raise
    _fsync_dir(root)
    os.rmdir(staging)
    _fsync_dir(root)
