"""Which snapshots a node keeps: restic-style rules over commit order, times and CA identities. Pure.

"Newest" is commit order (``history``), never the order of the ids, whose writers' clocks
may lie. A snapshot survives when at least one rule keeps it; each rule names itself as a
reason:

- ``last``: one of the newest ``keep``;
- ``within``: taken less than ``within`` seconds before the *newest snapshot* (as restic
  does, not before now: a node that stopped committing keeps its history however long it
  stays stopped), by the trusted times (a record whose clock is later than the newest
  commit's counts as taken when the next commit after it was); when the newest commit is
  ``within`` or more after the one before it (its clock jumped ahead, or the node was
  stopped that long), what is within the window before that one is kept too, until the
  next commit;
- ``hourly`` / ``daily``: the newest in commit order of each of the last ``hourly``
  distinct UTC hours, ``daily`` distinct UTC days that hold a snapshot, the hour or day
  being the one the record's own clock names;
- ``ca``: the newest snapshot of each CA identity (SPKI SHA-256 of the state's CA
  certificate) ever seen, so that a wrongly published CA, committed many times, can never
  push the last snapshot of the good CA out of history; snapshots of unknown CA (records
  older than the field, or trees without a CA) have no such reason;
- ``pinned``: named by ``statesync pin``;
- ``head``: the snapshot the head names, whatever the other rules say.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..errors import CorruptData
from ..jsonload import loads
from .history import id_time, newest_first, trusted_times
from .layout import SNAPSHOT_ID_RE

__all__ = ["REASONS", "Rules", "Snap", "decide", "to_forget", "decode_pins", "encode_pins", "id_time"]

REASONS = ("last", "within", "hourly", "daily", "ca", "pinned", "head")


@dataclass(frozen=True)
class Rules:
    keep: int = 10
    within: float = 0.0
    hourly: int = 0
    daily: int = 0

    def describe(self) -> str:
        parts = [f"keep = {self.keep}"]
        if self.within:
            parts.append(f"keep_within = {self.within:g}s")
        if self.hourly:
            parts.append(f"keep_hourly = {self.hourly}")
        if self.daily:
            parts.append(f"keep_daily = {self.daily}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Snap:
    """What the rules know of one snapshot: its id (which carries its writer's clock), CA
    identity, and its place in commit order (``history.Commit``: parent, sequence number,
    Consul index of its record key; 0 when unknown)."""

    id: str
    ca: str = ""
    parent: str = ""
    seq: int = 0
    index: int = 0


def decide(snaps: Iterable[Snap], rules: Rules, pinned: Collection[str] = (),
           head: str = "") -> dict[str, tuple[str, ...]]:
    """Every snapshot id, newest first in commit order, with the reasons that keep it (in ``REASONS``
    order); ``()`` means it goes."""
    ordered = newest_first({s.id: s for s in snaps}.values(), head)
    times = trusted_times(ordered)
    reasons: dict[str, list[str]] = {s.id: [] for s in ordered}
    for s in ordered[:max(rules.keep, 0)]:
        reasons[s.id].append("last")
    if rules.within > 0 and ordered:
        ends = [times[ordered[0].id]]
        # The newest commit never ages the one before it out of the window: its clock may have
        # jumped ahead, and nothing after it says so yet.
        if len(ordered) > 1 and (ends[0] - times[ordered[1].id]).total_seconds() >= rules.within:
            ends.append(times[ordered[1].id])
        for s in ordered:
            if any((end - times[s.id]).total_seconds() < rules.within for end in ends):
                reasons[s.id].append("within")
    for name, count, bucket in (("hourly", rules.hourly, "%Y%m%d%H"), ("daily", rules.daily, "%Y%m%d")):
        seen: set[str] = set()
        for s in ordered:
            if len(seen) >= count:
                break
            # The record's own clock names its bucket (a wrong one can claim at most one of its
            # own); the trusted time would fold a whole history into the bucket of a newest
            # commit whose clock runs behind.
            b = id_time(s.id).strftime(bucket)
            if b not in seen:
                seen.add(b)
                reasons[s.id].append(name)
    cas: set[str] = set()
    for s in ordered:
        if s.ca and s.ca not in cas:
            cas.add(s.ca)
            reasons[s.id].append("ca")
    for s in ordered:
        if s.id in pinned:
            reasons[s.id].append("pinned")
    if head in reasons:
        reasons[head].append("head")
    return {sid: tuple(r) for sid, r in reasons.items()}


def to_forget(snaps: Iterable[Snap], rules: Rules, pinned: Collection[str] = (), head: str = "") -> list[str]:
    """The ids no rule keeps, newest first."""
    return [sid for sid, why in decide(snaps, rules, pinned, head).items() if not why]


def decode_pins(blob: bytes | None) -> list[str]:
    """The pinned ids stored at ``Layout.pins``; raise CorruptData when the value is damaged,
    so that nothing prunes as if no snapshot were pinned."""
    if not blob:
        return []
    try:
        doc = loads(blob)
    except ValueError:
        doc = None
    pinned = doc.get("pinned") if isinstance(doc, dict) and doc.get("v") == 1 else None
    if not isinstance(pinned, list) or not all(isinstance(i, str) and SNAPSHOT_ID_RE.fullmatch(i) for i in pinned):
        raise CorruptData("the pins document is malformed")
    return sorted(set(pinned))


def encode_pins(ids: Iterable[str]) -> bytes:
    return json.dumps({"v": 1, "pinned": sorted(set(ids))}, separators=(",", ":")).encode()
