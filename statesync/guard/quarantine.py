"""Moving a node's certificates out of Icinga 2's way, durably and without deleting anything."""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from ..disk import QUARANTINE_DIR
from ..fsutil import fsync_dir

DECISION_FILE = "statesync-decision.json"


def quarantine(root: Path, files: list[str], stamp: str, note: dict) -> tuple[Path, list[str]]:
    """Move the existing ``files`` (root-relative) into ``<root>/.statesync-quarantine/<stamp>/``.

    Writes ``note`` as statesync-decision.json next to them first. Files are renamed
    (never deleted); across filesystems they are copied, fsynced, then unlinked.
    Directories are fsynced so the moves survive a crash. Returns the directory and
    the files moved, in order. Raises OSError.
    """
    base = Path(root) / QUARANTINE_DIR
    base.mkdir(mode=0o700, exist_ok=True)
    dest, n = base / stamp, 0
    while True:
        try:
            dest.mkdir(mode=0o700)
            break
        except FileExistsError:
            n += 1
            dest = base / f"{stamp}-{n}"
    fsync_dir(base)
    fd = os.open(dest / DECISION_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(note, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    moved, sources = [], set()
    for rel in files:
        src = Path(root) / rel
        if not os.path.lexists(src):
            continue
        _move(src, dest / src.name)
        moved.append(rel)
        sources.add(src.parent)
    for d in (dest, *sources):
        fsync_dir(d)
    return dest, moved


def _move(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # certs/ is on another filesystem than the root (a separate mount): copy, then unlink.
    shutil.copy2(src, dst, follow_symlinks=False)
    if not dst.is_symlink():
        with open(dst, "rb") as fh:
            os.fsync(fh.fileno())
    os.unlink(src)


def unquarantine(root: Path, dest: Path, moved: list[str]) -> list[str]:
    """Undo ``quarantine``: move ``moved`` (root-relative, as it returned them) back from ``dest``.

    Used when the restart trigger failed: a node left without certificates and without a
    restart is worse than one with the old ones. Files go back in reverse order, so ca.crt
    (moved last) returns last. A file that reappeared in its place meanwhile is left in the
    quarantine rather than overwritten. Once all are back, the decision note and the
    directory go too, so that the purge window does not count this attempt. Returns the
    files left in quarantine. Raises OSError.
    """
    left, targets = [], set()
    for rel in reversed(moved):
        src, dst = dest / Path(rel).name, Path(root) / rel
        if os.path.lexists(dst) or not os.path.lexists(src):
            left.append(rel)
            continue
        _move(src, dst)
        targets.add(dst.parent)
    for d in targets:
        fsync_dir(d)
    if not left:
        os.unlink(dest / DECISION_FILE)
        os.rmdir(dest)
        fsync_dir(dest.parent)
    return left
