"""Writing a snapshot back under --root: fetch and verify everything, stage, then swap.

Nothing under --root is touched until every chunk has been fetched and verified.
The files are written into a staging directory inside --root (the same filesystem,
even when --root is a volume mount point) and fsynced. The swap then moves the old
top-level entries into ``.statesync-aside/<timestamp>/`` and the staged ones into
place, under a journal: a swap interrupted by a crash is rolled forward by the next
``recover()``, so --root ends up entirely old (on any error) or entirely new.
"""
from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from ..errors import RestoreRefused, StatesyncError, UnsafePath
from ..fsutil import fsync_dir, sync_filesystem, write_atomic
from ..repo.repository import Repo
from ..snapshot.manifest import DIR, FILE, SYMLINK, Entry, Manifest
from ..snapshot.record import Record
from ..snapshot.scan import INTERNAL_PREFIX

log = structlog.get_logger(__name__)

STAGING_PREFIX = INTERNAL_PREFIX + "staging-"
ASIDE_DIR = INTERNAL_PREFIX + "aside"
JOURNAL = INTERNAL_PREFIX + "restore-journal.json"

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RestoreResult:
    record: Record
    files: int
    bytes: int
    entries: int
    aside: Path | None = None


def user_entries(root: Path) -> list[str]:
    """Top-level names under ``root`` that are not statesync's own; [] when root is absent."""
    try:
        return sorted(n for n in os.listdir(root) if not n.startswith(INTERNAL_PREFIX))
    except FileNotFoundError:
        return []


def has_icinga_state(root: Path) -> bool:
    """True when ``root`` holds Icinga 2 state: a ca/ or a certs/ directory."""
    return (root / "ca").exists() or (root / "certs").exists()


def fetch_verified(repo: Repo, record: Record) -> tuple[Manifest, Callable[[Entry], bytes]]:
    """Fetch the manifest and every chunk of ``record``, verified and decrypted.

    Returns the manifest and a function giving a file entry's bytes. Raises
    CorruptData/UnsafePath, or EncryptionKeyError for a missing or wrong key.
    """
    manifest = repo.manifest(record)
    contents = repo.contents(record, manifest)
    return manifest, lambda entry: repo.file_bytes(entry, contents)


def restore(repo: Repo, record: Record, root: Path, force: bool = False,
            progress: Progress | None = None) -> RestoreResult:
    """Restore ``record`` into ``root``.

    ``root`` must be absent or empty unless ``force``, in which case its content is moved
    into ``.statesync-aside/<timestamp>/`` first. Raises RestoreRefused, CorruptData,
    UnsafePath, or StatesyncError for I/O failures; in every case ``root`` is left as it was.
    """
    if root.exists() and not root.is_dir():
        raise RestoreRefused(f"{root} exists and is not a directory")
    recover(root)
    existing = user_entries(root)
    if existing and not force:
        raise RestoreRefused(f"{root} is not empty ({len(existing)} entries); use --force to move them aside")
    manifest, file_bytes = fetch_verified(repo, record)
    created_root = not root.exists()
    staging: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(root)
        staging = root / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        write_tree(staging, manifest, file_bytes, progress)
        aside = _swap(root, staging, existing, _top_names(manifest))
    except BaseException as exc:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created_root:
            shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, OSError):
            raise StatesyncError(f"restore failed, {root} left as it was: {_describe(exc)}") from None
        raise
    return RestoreResult(record, manifest.file_count, manifest.total_bytes, len(manifest.entries), aside)


def _top_names(manifest: Manifest) -> list[str]:
    return sorted({e.path.split("/")[0] for e in manifest.entries})


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _remove_stale_staging(root: Path) -> None:
    for name in os.listdir(root):
        if name.startswith(STAGING_PREFIX):
            shutil.rmtree(root / name, ignore_errors=True)


# -- the swap, under a journal -------------------------------------------------------

def _swap(root: Path, staging: Path, old: list[str], new: list[str]) -> Path | None:
    """Move ``old`` names aside and the staged ``new`` names into place; roll back on error."""
    aside = root / ASIDE_DIR / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) if old else None
    if aside is not None:
        while aside.exists():
            aside = aside.with_name(aside.name + "-" + secrets.token_hex(2))
        aside.mkdir(parents=True)
    journal = {"staging": staging.name, "aside": str(aside.relative_to(root)) if aside else "", "old": old, "new": new}
    write_atomic(root / JOURNAL, json.dumps(journal).encode())
    try:
        _roll_forward(root, journal)
    except OSError:
        _roll_back(root, journal)
        raise
    return aside


def _roll_forward(root: Path, journal: dict) -> None:
    staging, aside = root / journal["staging"], root / journal["aside"] if journal["aside"] else None
    for name in journal["old"]:
        if (root / name).exists() or (root / name).is_symlink():
            os.rename(root / name, aside / name)
    for name in journal["new"]:
        if (staging / name).exists() or (staging / name).is_symlink():
            os.rename(staging / name, root / name)
    fsync_dir(root)
    if aside is not None:
        fsync_dir(aside)
    os.unlink(root / JOURNAL)
    shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(root)


def _roll_back(root: Path, journal: dict) -> None:
    staging, aside = root / journal["staging"], root / journal["aside"] if journal["aside"] else None
    for name in journal["new"]:
        if (root / name).exists() and not (staging / name).exists():
            os.rename(root / name, staging / name)
    for name in journal["old"]:
        if aside is not None and ((aside / name).exists() or (aside / name).is_symlink()):
            os.rename(aside / name, root / name)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    os.unlink(root / JOURNAL)
    fsync_dir(root)


def recover(root: Path) -> bool:
    """Finish a swap that a crash interrupted; return True when there was one to finish.

    The staged tree was complete and fsynced before the journal was written, so the
    only safe direction is forward.
    """
    path = root / JOURNAL
    try:
        journal = json.loads(path.read_bytes())
    except FileNotFoundError:
        return False
    except ValueError:
        raise StatesyncError(f"{path} is unreadable; inspect {root} by hand") from None
    log.warning("finishing an interrupted restore", root=str(root))
    _roll_forward(root, journal)
    return True


# -- writing the staged tree ---------------------------------------------------------

def write_tree(target: Path, manifest: Manifest, file_bytes: Callable[[Entry], bytes],
               progress: Progress | None = None) -> None:
    """Create every entry of ``manifest`` under the empty directory ``target``; ``file_bytes``
    gives a file entry's verified content.

    Directory metadata is applied last, deepest first, so that writing their children
    does not disturb their mtimes. Raises OSError, CorruptData or UnsafePath.
    """
    as_root = os.geteuid() == 0
    owners: dict[tuple, tuple[int, int]] = {}  # one user database lookup per owner, not per file

    def owner(e: Entry) -> tuple[int, int]:
        key = (e.user, e.group, e.uid, e.gid)
        if key not in owners:
            owners[key] = owner_of(e)
        return owners[key]

    entries = sorted(manifest.entries, key=lambda e: e.path)
    files = written = 0
    checked: set[str] = set()
    base = str(target)
    for e in entries:
        path = _safe_join(base, e.path, checked)
        if e.type == DIR:
            os.mkdir(path, 0o700)
        elif e.type == FILE:
            _write_file(path, e, file_bytes(e), owner(e) if as_root else None)
            files += 1
            written += e.size
            if progress:
                progress(files, written)
        elif e.type == SYMLINK:
            os.symlink(e.target, path)
            if as_root:
                os.lchown(path, *owner(e))
            os.utime(path, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
    for e in sorted((e for e in entries if e.type == DIR), key=lambda e: e.path.count("/"), reverse=True):
        path = f"{base}/{e.path}"
        if as_root:
            os.lchown(path, *owner(e))
        os.chmod(path, e.mode)
        os.utime(path, ns=(e.mtime_ns, e.mtime_ns))
    # Durable before the swap: one sync of the filesystem instead of an fsync per file and
    # directory (10,000 fsyncs take seconds). Raises OSError when the writeback failed.
    sync_filesystem(target)


def _safe_join(base: str, rel: str, checked: set[str] | None = None) -> str:
    path = f"{base}/{rel}"
    parent = path.rpartition("/")[0]
    # Paths were validated when the manifest was decoded; this guards the filesystem
    # itself: every parent must be a real directory we created, never a link. ``checked``
    # holds the parents found so earlier in this walk (the staging directory is ours, 0700).
    if parent != base and (checked is None or parent not in checked):
        if os.path.islink(parent) or not os.path.isdir(parent):
            raise UnsafePath(f"manifest path {rel!r} does not lie below a directory of the snapshot")
        if checked is not None:
            checked.add(parent)
    return path


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


def _write_file(path: str, e: Entry, data: bytes, owner: tuple[int, int] | None) -> None:
    """Create ``path`` with ``data``, the ``owner`` (uid, gid; None: leave it), mode and mtime
    of ``e``. Not synced: write_tree syncs the whole tree once."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, e.mode)
        os.utime(fd, ns=(e.mtime_ns, e.mtime_ns))
    finally:
        os.close(fd)
