"""The chunks each kept snapshot of a node needs, held compactly. Pure: no I/O.

Snapshots of one tree share nearly all their chunks. A whole set of digests per kept snapshot
(10 by default) cost the daemon one digest per file and snapshot once garbage collection had
asked for them all: 450 MB at 300,000 files. Here one snapshot's set is held whole (the head:
a commit's base and a scan's ``known``), and every other one only as its difference from it,
(missing, extra): its chunks are ``(whole - missing) | extra``, exactly.
"""
from __future__ import annotations

from collections.abc import Callable, Container, Iterable

Refs = frozenset[str]


class Known:
    """The chunks a scan may take as stored (``Scanner.scan``'s ``known``): the head's, as the
    very set ``RefSets`` holds whole. A set of its own was one more table of every digest,
    copied at each commit: tens of megabytes at 300,000 files. ``Repo.commit`` moves it on."""

    __slots__ = ("refs",)

    def __init__(self, refs: Refs = frozenset()):
        self.refs = refs

    def __contains__(self, digest: object) -> bool:
        return digest in self.refs

    def __len__(self) -> int:
        return len(self.refs)


class RefSets:
    def __init__(self) -> None:
        self._whole: tuple[str, Refs] | None = None
        self._deltas: dict[str, tuple[Refs, Refs]] = {}

    def get(self, snapshot_id: str, load: Callable[[], Refs]) -> Refs:
        """The chunks of ``snapshot_id`` (``load`` reads them when they are not held); from
        now on the set held whole."""
        whole, delta = self._whole, self._deltas.get(snapshot_id)
        if whole is not None and whole[0] == snapshot_id:
            return whole[1]
        refs = load() if delta is None or whole is None else frozenset((whole[1] - delta[0]) | delta[1])
        self.set_whole(snapshot_id, refs)
        return refs

    def set_whole(self, snapshot_id: str, refs: Refs) -> None:
        """Hold ``refs`` (of ``snapshot_id``) whole, every other snapshot's delta moved onto it:
        in time and memory proportional to the differences, beside one pass over ``refs``."""
        old = self._whole
        if old is not None and old[0] != snapshot_id:
            gained, lost = refs - old[1], old[1] - refs
            moved = {k: (frozenset((gained | (missing & refs)) - extra), frozenset((lost - missing) | (extra - refs)))
                     for k, (missing, extra) in self._deltas.items()}
            moved[old[0]] = (gained, lost)
            self._deltas = moved
        self._deltas.pop(snapshot_id, None)
        self._whole = (snapshot_id, refs)

    def union(self, snapshot_ids: Iterable[str], load: Callable[[str], Refs]) -> set[str]:
        """Every chunk one of ``snapshot_ids`` needs; a snapshot not held is read with
        ``load(id)``, one at a time, and kept as its delta."""
        out: set[str] = set()
        missing: list[Refs] = []
        whole = False
        for sid in snapshot_ids:
            if self._whole is None:
                self.set_whole(sid, load(sid))
            held_id, held = self._whole
            if sid == held_id:
                whole = True
                continue
            if sid not in self._deltas:
                loaded = load(sid)
                self._deltas[sid] = (held - loaded, loaded - held)
            missing.append(self._deltas[sid][0])
            out |= self._deltas[sid][1]
        if whole:
            out |= self._whole[1]
        elif missing:
            out |= self._whole[1] - frozenset.intersection(*missing)
        return out

    def keep(self, snapshot_ids: Container[str]) -> None:
        """Forget the deltas of snapshots not in ``snapshot_ids``."""
        self._deltas = {k: v for k, v in self._deltas.items() if k in snapshot_ids}
