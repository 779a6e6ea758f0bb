"""``statesync nodes``: every node under a prefix, its head and the CA its head holds.

A rebuilt master comes up under a new host name; the operator finds its old node name by the
CA fingerprint its snapshots hold, which is why each node's head is read, not only listed.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..consul.store import Store
from ..errors import CorruptData, StatesyncError
from ..jsonload import loads
from ..snapshot.layout import Layout
from ..snapshot.record import Record, decode_record


@dataclass(frozen=True)
class Node:
    name: str
    head: Record | None  # None: no head key, or one that does not decode (``problem`` says which)
    snapshots: int
    role: str  # "" when unknown
    problem: str = ""


def nodes(store: Store, layout: Layout) -> list[Node]:
    """The nodes with a head or a snapshot record under ``layout.prefix``, by name."""
    keys = store.keys(layout.nodes)
    names = layout.nodes_with_snapshots(keys)
    published = _published_by(store, layout)
    satellites = _registered(store, layout)
    out = []
    for name in names:
        own = layout.for_node(name)
        count = sum(1 for k in keys if own.snapshot_id_of_key(k))
        head, problem = None, ""
        pair = store.get(own.head)
        if pair is None:
            problem = "no head key (snapshot records only)"
        else:
            try:
                head = decode_record(pair.value)
            except CorruptData as exc:
                problem = f"head unreadable: {exc}"
        role = str(head.meta.get("role") or "") if head is not None else ""
        if not role:
            role = "master" if name == published else "satellite" if name in satellites else ""
        out.append(Node(name, head, count, role, problem))
    return out


def _published_by(store: Store, layout: Layout) -> str:
    """The node that published the CA: only a master does."""
    try:
        pair = store.get(layout.ca)
        doc = loads(pair.value) if pair is not None else {}
    except (StatesyncError, ValueError, UnicodeDecodeError):
        return ""
    return str(doc.get("node") or "") if isinstance(doc, dict) else ""


def _registered(store: Store, layout: Layout) -> set[str]:
    """The names registered for enrolment: only a satellite registers."""
    try:
        return {k[len(layout.satellites):] for k in store.keys(layout.satellites)}
    except StatesyncError:
        return set()
