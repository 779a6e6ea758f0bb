"""The named roots (setting ``roots``) on disk: where they lead, and whether a scan found them.

One rule for backup, run and restore. ``root`` is resolved once, when the settings are loaded,
so a symlinked root is followed. A named root that is a symlink, or lies under one, is followed
too, when it leads to its own path below one directory, the same for every named root: the
official image's ``/var/lib/icinga2 -> /data/var/lib/icinga2`` and ``/etc/icinga2 ->
/data/etc/icinga2`` with ``root = /`` work as ``root = /data``. That directory then is the
root: the snapshot's paths are the same as with ``root = /data`` (a snapshot restores into
either layout), and statesync's own files (lock, journal, staging, aside) live on the same
filesystem as the trees they swap. Any other symlinked named root is a configuration error:
a rename through it would land where the snapshot's paths do not say. A symlink *inside* a
named root stays a symlink, in the snapshot and in a restore.

A named root must be a directory when a snapshot is committed: a scan that did not find one
(missing, replaced by a file or a symlink after the start, excluded) commits nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, RootMissing
from ..snapshot.manifest import DIR, SYMLINK, Manifest


def resolve(root: Path, roots: tuple[tuple[str, str], ...] = ()) -> Path:
    """The directory statesync works in for ``root`` and the named ``roots`` (name, root-relative
    path): ``root`` with every symlink resolved, or the one directory the named roots lead into.
    Raises ConfigError, naming the roots, when they lead elsewhere."""
    real = os.path.realpath(root)
    if not roots:
        return Path(real)
    bases: dict[str, str] = {}
    for name, rel in roots:
        target = os.path.realpath(os.path.join(real, rel))
        if not (target == os.path.join(real, rel) or target.endswith("/" + rel)):
            raise ConfigError(f"roots: {name} ({os.path.join(root, rel)}) leads to {target}, not to {rel} below "
                              f"a directory; name the real directories in root and roots")
        bases[name] = target[:-len(rel) - 1] or "/"
    if len(set(bases.values())) > 1:
        where = ", ".join(f"{name} into {base}" for name, base in sorted(bases.items()))
        raise ConfigError(f"roots: the named roots lead into different directories ({where}); "
                          f"a symlinked root is followed only when all lead into one, which becomes the root")
    return Path(next(iter(bases.values())))


def absent(manifest: Manifest, roots: tuple[tuple[str, str], ...]) -> list[str]:
    """The named roots ``manifest`` lacks as directories, each as ``name (path) why``; [] when
    every one is there (and always without roots)."""
    if not roots:
        return []  # spares a pass over every entry at each of the daemon's syncs
    wanted = {rel: name for name, rel in roots}
    found = manifest.find(*wanted)
    out = []
    for name, rel in roots:
        e = found.get(rel)
        if e is None:
            out.append(f"{name} ({rel}) does not exist")
        elif e.type != DIR:
            out.append(f"{name} ({rel}) is a {'symlink' if e.type == SYMLINK else 'file'}, not a directory")
    return out


def require(manifest: Manifest, roots: tuple[tuple[str, str], ...], root: Path) -> None:
    """Raise RootMissing, naming each, when ``manifest`` (a scan of ``root``) lacks a named root."""
    gaps = absent(manifest, roots)
    if gaps:
        raise RootMissing(f"roots: {'; '.join(gaps)} in {root}; nothing committed")
