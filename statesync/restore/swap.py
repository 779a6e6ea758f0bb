"""Swapping a staged tree into --root under a journal, and settling a swap a crash interrupted.

The swapped names are the top-level names of the snapshot, or, with ``roots``, the named
subtrees (``var/lib/icinga2``: names with slashes). The journal lists the old names (moved
into the aside directory at the same relative path), the new names (moved from staging into
place) and the directories above new names that root lacked (``made``, with the mode, owner
and mtime the snapshot recorded for them): a crash is rolled forward by ``recover()``, an
error rolled back, and nothing else in root is ever moved.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import time
from pathlib import Path

import structlog

from ..disk import ASIDE_DIR, JOURNAL
from ..errors import RestoreRefused, StatesyncError, UnsafePath
from ..fsutil import fsync_dir, write_atomic
from ..jsonload import loads
from ..tree.dirfd import DIR_FLAGS, DirChain
from .rootlock import hold_root

log = structlog.get_logger(__name__)



def exists(path: Path) -> bool:
    # lstat, never stat: a symlink is there whatever it points at, and following it would fail
    # (ENAMETOOLONG, ELOOP) on a target that is no usable path.
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def parents(name: str) -> list[str]:
    """The directories above ``name``, shallowest first: ``var/lib/icinga2`` → var, var/lib."""
    parts = name.split("/")[:-1]
    return ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]


def check_parents(base: Path, name: str, error: type[StatesyncError] = RestoreRefused) -> None:
    """Raise ``error`` when a directory above ``name`` in ``base`` is a symlink or no directory:
    a rename through it would land outside ``base``, or fail half way through the swap."""
    for p in parents(name):
        try:
            st = os.lstat(base / p)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise error(f"{base / p} is not a directory (a symlink or a file); it must hold {name}")


def remove_tree(path: Path) -> None:
    """Remove the directory ``path`` and all below it, at any depth and never through a symlink;
    best effort, as clean-up is. Not shutil.rmtree: in Python 3.11 it recurses, and a tree a
    thousand levels deep ends in a RecursionError that would hide the error being cleaned up."""
    try:
        # The parent is the root (or one of our directories in it), which may be a symlink given as
        # --root or --target: followed, as every command follows it. Below it nothing is.
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    top, chain = -1, None
    try:
        top = os.open(path.name, DIR_FLAGS, dir_fd=parent)
        chain = DirChain(top)
        names: list[str] = []
        while True:
            sub = None
            with os.scandir(chain.fd) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        sub = e.name
                        break
                    os.unlink(e.name, dir_fd=chain.fd)
            if sub is not None:
                chain.enter(sub, sub)
                names.append(sub)
            elif names:
                chain.leave()
                os.rmdir(names.pop(), dir_fd=chain.fd)
            else:
                break
        os.rmdir(path.name, dir_fd=parent)
    except OSError:
        pass
    finally:
        if chain is not None:
            chain.close()
        if top >= 0:
            os.close(top)
        os.close(parent)


def swap(root: Path, staging: Path, old: list[str], new: list[str]) -> Path | None:
    """Move ``old`` names aside and the staged ``new`` names into place; roll back on error."""
    for name in old + new:
        check_parents(root, name)
    for name in new:
        check_parents(staging, name, UnsafePath)
    aside = root / ASIDE_DIR / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) if old else None
    if aside is not None:
        # Only named here: roll_forward makes it as it moves the first old name into it, after the
        # journal, so that a failure before (a full disk) leaves no empty aside directory behind.
        while exists(aside):
            aside = aside.with_name(aside.name + "-" + secrets.token_hex(2))
    made = []
    for p in sorted({p for name in new for p in parents(name) if not exists(root / p)}):
        st = os.lstat(staging / p)  # written from the snapshot's entry, before any rename disturbs it
        made.append({"path": p, "mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                     "mtime_ns": st.st_mtime_ns})
    journal = {"staging": staging.name, "aside": str(aside.relative_to(root)) if aside else "", "old": old,
               "new": new, "made": made}
    write_atomic(root / JOURNAL, json.dumps(journal).encode())
    try:
        roll_forward(root, journal)
    except OSError:
        roll_back(root, journal)
        raise
    return aside


def _fsync_around(base: Path, names: list[str]) -> None:
    for d in sorted({(base / n).parent for n in names}, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(d)


def roll_forward(root: Path, journal: dict) -> None:
    staging, aside = root / journal["staging"], root / journal["aside"] if journal["aside"] else None
    for name in journal["old"]:
        # Already aside means the swap went past it: what root holds there now is the new tree.
        if exists(root / name) and not exists(aside / name):
            (aside / name).parent.mkdir(parents=True, exist_ok=True)
            os.rename(root / name, aside / name)
    made = journal.get("made", [])
    for m in made:
        path = root / m["path"]
        if not exists(path):
            os.mkdir(path, 0o700)
        if os.geteuid() == 0:
            os.chown(path, m["uid"], m["gid"], follow_symlinks=False)
        os.chmod(path, m["mode"])
    for name in journal["new"]:
        if exists(staging / name):
            os.rename(staging / name, root / name)
    for m in reversed(made):  # after the renames, which stamp their directories
        os.utime(root / m["path"], ns=(m["mtime_ns"], m["mtime_ns"]), follow_symlinks=False)
    _fsync_around(root, journal["new"] + [m["path"] for m in made])
    if aside is not None:
        _fsync_around(aside, journal["old"])
    os.unlink(root / JOURNAL)
    remove_tree(staging)
    fsync_dir(root)


def roll_back(root: Path, journal: dict) -> None:
    staging, aside = root / journal["staging"], root / journal["aside"] if journal["aside"] else None
    for name in journal["new"]:
        if exists(root / name) and not exists(staging / name):
            os.rename(root / name, staging / name)
    for name in journal["old"]:
        if aside is not None and exists(aside / name):
            os.rename(aside / name, root / name)
    for m in reversed(journal.get("made", [])):
        try:
            os.rmdir(root / m["path"])  # only when empty: never more than this swap made
        except OSError:
            pass
    if aside is not None:
        remove_tree(aside)
        try:
            os.rmdir(aside.parent)  # only when empty: what this swap made, or an empty one before
        except OSError:
            pass
    os.unlink(root / JOURNAL)
    fsync_dir(root)


def recover(root: Path) -> bool:
    """Finish a swap that a crash interrupted; return True when there was one to finish.

    The staged tree was complete and fsynced before the journal was written, so the
    only safe direction is forward. Every entry point (restore, backup, `run` start-up)
    calls this first. It rolls forward only under the root lock (taken here unless held):
    a journal seen without the lock may be a live restore's swap in progress.
    """
    path = root / JOURNAL
    if not path.exists():
        return False
    with hold_root(root, "restore"):
        try:
            journal = loads(path.read_bytes())
        except FileNotFoundError:
            return False
        except ValueError:
            raise StatesyncError(f"{path} is unreadable; inspect {root} by hand") from None
        log.warning("finishing an interrupted restore", root=str(root))
        roll_forward(root, journal)
    return True
