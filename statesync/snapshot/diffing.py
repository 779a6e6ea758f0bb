"""Differences between two manifests, for ``statesync diff`` and ``restore --dry-run``. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from .manifest import Manifest


@dataclass(frozen=True)
class Diff:
    added: tuple[str, ...]
    changed: tuple[str, ...]  # type or content
    removed: tuple[str, ...]
    metadata: tuple[str, ...] = ()  # same type and content; mode, owner or mtime differ

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed or self.metadata)

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "changed": list(self.changed), "removed": list(self.removed),
                "metadata": list(self.metadata)}


def diff(old: Manifest, new: Manifest) -> Diff:
    """What turning ``old`` into ``new`` adds, changes (type or content), removes, and changes
    in metadata only. Sealed and plain entries compare by their digests as given: the caller
    addresses both sides alike (``restore.local_manifest``)."""
    before, after = old.by_path(), new.by_path()
    added = tuple(sorted(p for p in after if p not in before))
    removed = tuple(sorted(p for p in before if p not in after))
    common = sorted(p for p in after if p in before)
    changed = tuple(p for p in common if not after[p].same_content(before[p]))
    metadata = tuple(p for p in common if after[p].same_content(before[p]) and not _same_meta(after[p], before[p]))
    return Diff(added, changed, removed, metadata)


def _same_meta(a, b) -> bool:
    # Directory mtimes move whenever a child changes; they say nothing about the state.
    if a.type == "d":
        return (a.mode, a.uid, a.gid) == (b.mode, b.uid, b.gid)
    return a.same_metadata(b)
