"""Restoring part of a snapshot (``restore --include PATH --target DIR``): which entries.

The part is written by ``apply.restore`` like a whole snapshot (fetched and verified, staged,
swapped in under the journal); this module only chooses it. A selected path brings the
directories above it, with their recorded metadata, so that it lands where the snapshot had it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from ..errors import NotFound, UsageError
from ..snapshot.manifest import Manifest
from ..snapshot.names import escape


def clean_paths(paths: Iterable[str]) -> tuple[str, ...]:
    """The --include paths, root-relative and '/'-separated, without those below another one.
    Raises UsageError for a path that is absolute, empty or climbs with '..'."""
    out: list[str] = []
    for raw in paths:
        parts = raw.rstrip("/").split("/") if raw.rstrip("/") else [""]
        if raw.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in raw:
            raise UsageError(f"--include {raw!r}: a path relative to the snapshot's root, without '.' or '..' "
                             f"components (statesync diff lists the paths); nothing written")
        out.append("/".join(parts))
    # A path below another selected one is in its subtree already: named twice, the swap would move it twice.
    return tuple(sorted(p for p in set(out) if not any(p.startswith(q + "/") for q in out)))


def select(manifest: Manifest, paths: tuple[str, ...], snapshot_id: str) -> Manifest:
    """The entries of ``paths`` and everything below them, with their parent directories.
    A hard link whose first path is not selected becomes a file of its own. Raises NotFound
    naming the first path that matches nothing."""
    by_path = manifest.by_path()
    chosen: dict[str, object] = {}
    for p in paths:
        hits = [e for e in manifest.entries if e.path == p or e.path.startswith(p + "/")]
        if not hits:
            raise NotFound(f"--include {escape(p)}: no such path in snapshot {snapshot_id}; nothing written")
        chosen.update((e.path, e) for e in hits)
    for path in list(chosen):
        parent = path.rpartition("/")[0]
        while parent and parent not in chosen:
            chosen[parent] = by_path[parent]
            parent = parent.rpartition("/")[0]
    entries = [dataclasses.replace(e, link="") if e.link and e.link not in chosen else e for e in chosen.values()]
    return Manifest(tuple(sorted(entries, key=lambda e: e.path)))
