"""Retention of one node's snapshots in Consul: what the rules see, pins, forget.

The rules themselves are pure (``snapshot/keep_rules``); this module feeds them. A record
never changes what the rules read from it (its id, CA identity, parent and sequence number;
rekey rewrites records in place but keeps them all), so each record is read once per
process, not at every commit. Its key's ModifyIndex, which places a record written before
the sequence number in commit order (``snapshot/history``), is read with it.
Pins live at ``Layout.pins``; every write that deletes records carries a check on the pins
key at the index the decision read, so a ``statesync pin`` racing a prune either lands
first and is obeyed, or makes the prune fail and be decided again.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from ..consul.client import Op
from ..consul.settings import READ_BATCH_BYTES
from ..consul.store import KVPair, Store
from ..errors import CasConflict, CorruptData, NotFound
from ..snapshot.history import newest_first
from ..snapshot.keep_rules import Rules, Snap, decide, decode_pins, encode_pins
from ..snapshot.layout import Layout
from ..snapshot.record import Record, decode_record

log = structlog.get_logger(__name__)

# A record with a long manifest chunk list is a few KiB; batches are cut by this estimate.
_RECORD_BYTES = 8192
_PIN_ATTEMPTS = 5


def snap(rec: Record, index: int = 0) -> Snap:
    """What the rules know of a record whose key Consul has at ModifyIndex ``index``."""
    return Snap(rec.id, rec.ca, rec.parent, rec.seq, index)


class RecordCache:
    """What the rules know of each snapshot record of a node, read from Consul once per record."""

    def __init__(self, store: Store, layout: Layout):
        self.store = store
        self.layout = layout
        self._snaps: dict[str, Snap] = {}

    def ids(self) -> list[str]:
        """Every snapshot id with a record, by key listing only."""
        return sorted(sid for k in self.store.keys(self.layout.snapshots) if (sid := self.layout.snapshot_id_of_key(k)))

    def snaps(self, ids: Iterable[str]) -> list[Snap]:
        """``Snap`` for each of ``ids``, reading only records not seen before; a record that is gone
        or does not decode counts as of unknown CA, placed by its key's index alone."""
        ids = sorted(set(ids))
        unseen = [i for i in ids if i not in self._snaps]
        if unseen:
            pairs = _read_pairs(self.store, [self.layout.snapshot(i) for i in unseen])
            for sid in unseen:
                pair = pairs.get(self.layout.snapshot(sid))
                try:
                    self._snaps[sid] = snap(decode_record(pair.value), pair.modify_index) if pair else Snap(sid)
                except CorruptData:
                    log.warning("snapshot record does not decode; its CA counts as unknown", snapshot=sid)
                    self._snaps[sid] = Snap(sid, index=pair.modify_index)
        live = set(ids)
        self._snaps = {k: v for k, v in self._snaps.items() if k in live}
        return [self._snaps[i] for i in ids]

    def add(self, rec: Record) -> None:
        self._snaps[rec.id] = snap(rec)


def _read_pairs(store: Store, keys: list[str]) -> dict[str, KVPair]:
    """The pairs (value and ModifyIndex) of those of ``keys`` that exist, in transactions of reads."""
    found: dict[str, KVPair] = {}
    per_txn = max(1, min(store.settings.txn_max_ops, READ_BATCH_BYTES // _RECORD_BYTES))
    for start in range(0, len(keys), per_txn):
        batch = keys[start:start + per_txn]
        try:
            pairs = store.txn([Op("get", k) for k in batch])
        except CasConflict:  # Consul refuses a batch that names a missing key as a whole
            pairs = [p for k in batch if (p := store.get(k)) is not None]
        found.update((p.key, p) for p in pairs)
    return found


def read_pins(store: Store, layout: Layout) -> tuple[list[str], int]:
    """The pinned ids and the pins key's ModifyIndex (0 when absent); CorruptData when damaged."""
    pair = store.get(layout.pins)
    if pair is None:
        return [], 0
    return decode_pins(pair.value), pair.modify_index


def pins_unchanged(layout: Layout, index: int) -> Op:
    """The transaction operation that fails (as a check-and-set conflict) when the pins changed
    since they were read at ``index``; absent pins are written empty, by check-and-set on the
    absent key, since Consul reports a failed ``check-not-exists`` as no conflict at all."""
    return Op("check-index", layout.pins, index=index) if index else Op("cas", layout.pins, encode_pins(()), index=0)


def set_pin(store: Store, layout: Layout, snapshot_id: str, pinned: bool) -> bool:
    """Pin (or unpin) a snapshot by check-and-set on the pins key; return False when it already
    was (or was not). NotFound when pinning an id without a record."""
    for _ in range(_PIN_ATTEMPTS):
        pins, index = read_pins(store, layout)
        if pinned and store.get(layout.snapshot(snapshot_id)) is None:
            raise NotFound(f"node {layout.node!r} has no snapshot {snapshot_id!r}")
        if (snapshot_id in pins) == pinned:
            return False
        wanted = set(pins) | {snapshot_id} if pinned else set(pins) - {snapshot_id}
        ops = [Op("cas", layout.pins, encode_pins(wanted), index=index)]
        if pinned:
            # A prune that read the pins before this write may still delete the record: the
            # record must exist in the very transaction that pins it.
            ops.append(Op("get", layout.snapshot(snapshot_id)))
        try:
            store.txn(ops)
        except CasConflict:
            continue
        return True
    raise CasConflict(f"the pins of node {layout.node!r} kept changing; try again")


@dataclass(frozen=True)
class ForgetPlan:
    """What the rules decide for a node: each snapshot's reasons (``()``: forgotten), newest first
    in commit order."""

    reasons: dict[str, tuple[str, ...]]
    head: str
    pins_index: int

    @property
    def forgotten(self) -> list[str]:
        return [sid for sid, why in self.reasons.items() if not why]


def prune_ops(store: Store, layout: Layout, snaps: list[Snap], rules: Rules, head: str,
              room: int) -> tuple[list[Op], set[str]]:
    """The operations (at most ``room``) a commit whose record is ``head`` adds to delete what the
    rules no longer keep among ``snaps`` (the new record's included), and the ids kept. With
    unreadable pins nothing is pruned."""
    try:
        pins, pins_index = read_pins(store, layout)
    except CorruptData as exc:
        log.error("pins unreadable: nothing pruned until the key is repaired or deleted",
                  key=layout.pins, error=str(exc))
        return [], {s.id for s in snaps}
    reasons = decide(snaps, rules, pins, head=head)
    forgotten = [sid for sid, why in reasons.items() if not why]
    if not forgotten:
        return [], set(reasons)
    # A pin written since the pins were read fails this commit rather than lose its snapshot.
    ops = [pins_unchanged(layout, pins_index)]
    # The oldest go first when a transaction cannot carry every deletion.
    ops += [Op("delete", layout.snapshot(sid)) for sid in reversed(forgotten[-(room - 1):])] if room > 1 else []
    return ops, set(reasons) - set(forgotten)


def ordered_records(pairs: Iterable[KVPair], layout: Layout, head: str = "") -> list[Record]:
    """The snapshot records among ``pairs`` (a listing of the node's snapshot keys), oldest first in
    commit order; CorruptData when one does not decode."""
    by_id = {}
    snaps = []
    for p in pairs:
        if layout.snapshot_id_of_key(p.key):
            rec = decode_record(p.value)
            by_id[rec.id] = rec
            snaps.append(snap(rec, p.modify_index))
    return [by_id[s.id] for s in reversed(newest_first(snaps, head))]


def plan(store: Store, layout: Layout, rules: Rules, catalog: RecordCache | None = None, head: str = "") -> ForgetPlan:
    """Decide, from the records, the pins and the head as Consul has them now."""
    catalog = catalog or RecordCache(store, layout)
    pins, pins_index = read_pins(store, layout)
    if not head:
        pair = store.get(layout.head)
        head = decode_record(pair.value).id if pair is not None else ""
    reasons = decide(catalog.snaps(catalog.ids()), rules, pins, head)
    return ForgetPlan(reasons, head, pins_index)


def forget(store: Store, layout: Layout, p: ForgetPlan, fence: tuple[Op, ...] = ()) -> int:
    """Delete the records ``p`` dooms; return how many. CasConflict when the pins changed."""
    forgotten = p.forgotten
    per_txn = max(1, store.settings.txn_max_ops - len(fence) - 1)
    for start in range(0, len(forgotten), per_txn):
        ops = [*fence, pins_unchanged(layout, p.pins_index)]
        ops += [Op("delete", layout.snapshot(sid)) for sid in forgotten[start:start + per_txn]]
        try:
            store.txn(ops)
        except CasConflict:
            raise CasConflict(f"the pins of node {layout.node!r} changed meanwhile; run forget again") from None
    return len(forgotten)
