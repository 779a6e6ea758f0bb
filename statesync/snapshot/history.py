"""Commit order: which snapshot of a node came after which, and when, without trusting a clock. Pure.

A snapshot id carries its writer's clock, and clocks lie: a host four years ahead, a VM
resumed with last week's time. Anything that orders snapshots by their ids lets such a
writer decide what "newest" means. So the order comes from what the commits themselves
establish, strongest first:

- **the parent chain**: a record is newer than the record it names as ``parent`` (each
  commit names the head it moved by check-and-set), and the head's chain is newer than
  anything off it;
- **the commit sequence number** (``meta.seq``, docs/FORMAT.md): each commit takes one
  more than the greatest among the node's records it saw;
- **Consul's index** of the record's key, for records written before the sequence number
  (a commit's transaction creates its record key, so the index is the commit's place in
  Consul's log); a record with a sequence number is newer than one without;
- the id, only to break a tie no store produces.

Times (for ``keep_within``, ``keep_hourly``, ``keep_daily``) are the clock each record
carries, except that a record whose clock is later than the newest commit's takes the
earliest clock among the commits after it: a snapshot from the future can neither make
the real recent ones look old nor claim a time bucket of its own.
"""
from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Protocol, TypeVar


class Commit(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def parent(self) -> str: ...

    @property
    def seq(self) -> int: ...

    @property
    def index(self) -> int: ...


C = TypeVar("C", bound=Commit)


def id_time(snapshot_id: str) -> datetime:
    """The UTC time a snapshot id carries (``20261123T234407.123456Z-1a2b3c``): its writer's clock."""
    return datetime.strptime(snapshot_id[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)


def _key(c: Commit) -> tuple[int, int, str]:
    return (1, c.seq, c.id) if c.seq > 0 else (0, c.index, c.id)


def newest_first(commits: Iterable[C], head: str = "") -> list[C]:
    """``commits`` in commit order, newest first; ``head`` (when among them) and its parent chain first."""
    by_id = {c.id: c for c in commits}
    children: dict[str, list[C]] = {}
    heap: list[tuple[tuple[int, int, str], str]] = []
    for c in by_id.values():
        if c.parent in by_id and c.parent != c.id:
            children.setdefault(c.parent, []).append(c)
        else:
            heap.append((_key(c), c.id))
    heapq.heapify(heap)
    oldest_first: list[C] = []
    while heap:
        cid = heapq.heappop(heap)[1]
        oldest_first.append(by_id[cid])
        for child in children.get(cid, ()):
            heapq.heappush(heap, (_key(child), child.id))
    placed = {c.id for c in oldest_first}
    # Only a damaged history has parent links in a cycle; its records still get a place.
    oldest_first += sorted((c for c in by_id.values() if c.id not in placed), key=_key)
    chain: list[C] = []
    on_chain: set[str] = set()
    cid = head
    while cid in by_id and cid not in on_chain:
        chain.append(by_id[cid])
        on_chain.add(cid)
        cid = by_id[cid].parent
    return chain + [c for c in reversed(oldest_first) if c.id not in on_chain]


def trusted_times(newest: Sequence[Commit]) -> dict[str, datetime]:
    """The time of each of ``newest`` (in commit order, newest first) that retention may measure by."""
    out: dict[str, datetime] = {}
    if not newest:
        return out
    latest = id_time(newest[0].id)
    floor = latest
    for c in newest:
        t = id_time(c.id)
        out[c.id] = t if t <= latest else floor
        floor = min(floor, t)
    return out


def next_seq(commits: Iterable[Commit]) -> int:
    """The sequence number of a commit made after all of ``commits``."""
    return max((c.seq for c in commits), default=0) + 1
