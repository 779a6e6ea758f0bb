"""Differences between two manifests, for ``restore --dry-run``. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from .manifest import Manifest


@dataclass(frozen=True)
class Diff:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def diff(current: Manifest, wanted: Manifest) -> Diff:
    """What turning ``current`` into ``wanted`` adds, changes (content or metadata) and removes."""
    cur, want = current.by_path(), wanted.by_path()
    added = tuple(sorted(p for p in want if p not in cur))
    removed = tuple(sorted(p for p in cur if p not in want))
    changed = tuple(sorted(p for p, e in want.items()
                           if p in cur and not (e.same_content(cur[p]) and _same_meta(e, cur[p]))))
    return Diff(added, changed, removed)


def _same_meta(a, b) -> bool:
    # Directory mtimes move whenever a child changes; they say nothing about the state.
    if a.type == "d":
        return (a.mode, a.uid, a.gid) == (b.mode, b.uid, b.gid)
    return a.same_metadata(b)
