"""An operator's decision to change the fleet's CA, and the history of published CAs. Pure.

``<prefix>/ca-accept`` holds at most one pending acceptance, written by ``statesync accept-ca``:

    {"v": 1, "old_spki_sha256": "<hex, or empty when nothing was published>",
     "new_spki_sha256": "<hex>", "new_cert_sha256": "<hex>", "new_subject": "CN=...",
     "node": "<node it was accepted for>", "operator": "<user@host>", "time": "<ISO 8601 UTC>",
     "reason": "<free text>"}

A master's publisher publishes a CA with another key only when the pending record names
exactly the published key as old and that CA's key as new; it deletes the record in the
same transaction that publishes (so the decision is used once) and files it in the history.

``<prefix>/ca-history`` is a JSON list, newest first, of at most ``HISTORY_MAX`` entries
``{"doc": <the replaced published document>, "replaced": "<ISO 8601>", "by": "<node>",
"new_spki_sha256": "<hex>", "decision": "renewal" | "accepted" | "on_conflict=keep-local",
"acceptance": <the consumed record, or null>}``.

Pure but for ``read_pending``, the one reader of the pending record, for the publisher, the
start-up decision and ``statesync accept-ca`` alike: it reads through the store it is handed
(``pki`` imports no Consul client).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..errors import CorruptData
from ..jsonload import loads
from ..snapshot.layout import valid_sha256
from . import cadoc
from .cadoc import PublishedCA

RECORD_VERSION = 1
HISTORY_MAX = 10
MAX_RECORD_BYTES = 16 * 1024
MAX_REASON = 1000


@dataclass(frozen=True)
class Acceptance:
    """A pending, operator-signed decision: publish ``new_spki_sha256`` in place of ``old_spki_sha256``."""

    old_spki_sha256: str
    new_spki_sha256: str
    new_cert_sha256: str
    new_subject: str
    node: str
    operator: str
    time: str
    reason: str

    def allows(self, old_spki: str, new_spki: str) -> bool:
        """True when this record names exactly this change (old key as published now, new key)."""
        return (self.old_spki_sha256, self.new_spki_sha256) == (old_spki or "", new_spki)


def encode_acceptance(a: Acceptance) -> bytes:
    return json.dumps({"v": RECORD_VERSION, **asdict(a)}, sort_keys=True).encode()


def decode_acceptance(blob: bytes) -> Acceptance:
    """Parse a stored record; raise CorruptData when it is not a complete one of ours."""
    if len(blob) > MAX_RECORD_BYTES:
        raise CorruptData(f"CA acceptance record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        d = loads(blob)
    except (ValueError, UnicodeDecodeError):
        raise CorruptData("CA acceptance record is not JSON") from None
    if not isinstance(d, dict) or d.get("v") != RECORD_VERSION:
        raise CorruptData("CA acceptance record has an unknown version")
    fields = {k: d.get(k) for k in Acceptance.__dataclass_fields__}
    if not all(isinstance(v, str) for v in fields.values()):
        raise CorruptData("CA acceptance record lacks a field")
    if not valid_sha256(fields["new_spki_sha256"]) or not (fields["old_spki_sha256"] == ""
                                                            or valid_sha256(fields["old_spki_sha256"])):
        raise CorruptData("CA acceptance record names no valid public key sha256")
    return Acceptance(**fields)


@dataclass(frozen=True)
class Pending:
    """What ``<prefix>/ca-accept`` holds: the record (None when absent or invalid), the key's
    ModifyIndex (0 when absent: a check-and-set at 0 creates it; an invalid record keeps its
    index, so that a new decision replaces it) and why it is ignored ("" unless invalid)."""

    record: Acceptance | None
    index: int
    invalid: str = ""


def read_pending(store, key: str) -> Pending:
    """Read the pending acceptance at ``key`` with a consistent read (``store``: consul.store.Store).
    Raises what the store raises (ConsulUnavailable, PermissionDenied, ...): each caller decides
    whether an unreadable decision is an error or no decision."""
    pair = store.get(key, consistent=True)
    if pair is None:
        return Pending(None, 0)
    try:
        return Pending(decode_acceptance(pair.value), pair.modify_index)
    except CorruptData as exc:
        return Pending(None, pair.modify_index, str(exc))


def history_entry(old: PublishedCA, new: PublishedCA, decision: str, acceptance: Acceptance | None) -> dict:
    return {"doc": loads(cadoc.encode(old)), "replaced": new.published, "by": new.node,
            "new_spki_sha256": new.spki_sha256, "decision": decision,
            "acceptance": asdict(acceptance) if acceptance is not None else None}


def decode_history(blob: bytes | None) -> list[dict]:
    """The stored history, newest first; an unreadable one reads as empty (it is informative only)."""
    if not blob:
        return []
    try:
        items = loads(blob)
    except (ValueError, UnicodeDecodeError):
        return []
    return [i for i in items if isinstance(i, dict) and isinstance(i.get("doc"), dict)] \
        if isinstance(items, list) else []


def with_entry(history: list[dict], entry: dict) -> bytes:
    """``history`` with ``entry`` in front, bounded to HISTORY_MAX, encoded."""
    return json.dumps([entry, *history][:HISTORY_MAX], sort_keys=True).encode()
