"""Snapshot records: the small JSON documents that name a manifest. Pure.

A record is stored twice: at ``snapshots/<id>`` (the history) and at ``head``
(the latest, moved last with check-and-set).
"""
from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from ..errors import CorruptData
from ..jsonload import loads
from .layout import SNAPSHOT_ID_RE, valid_sha256

RECORD_VERSION = 1
# A record whose chunks may be compressed (docs/FORMAT.md, "Compressed chunks"): a decoder of
# version 1 refuses it as an unknown version instead of failing on a chunk's digest later.
COMPRESSED_VERSION = 2
# The CA identity rides in ``meta``: a decoder of before the field passes ``meta`` through
# whole, while it refuses any top-level key it does not know.
CA_META = "ca_spki_sha256"
# The commit sequence number (``history``) rides in ``meta`` for the same reason.
SEQ_META = "seq"


def new_id(now: datetime | None = None) -> str:
    """Return a new snapshot id, e.g. ``20261123T234407.123456Z-1a2b3c``: the writer's clock, for people
    to read; nothing orders snapshots by it (``history``)."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)


@dataclass(frozen=True)
class Record:
    id: str
    node: str
    created: str
    files: int
    dirs: int
    symlinks: int
    bytes: int
    manifest_chunks: tuple[str, ...]
    manifest_sha256: str
    manifest_size: int
    parent: str = ""
    chunk_size: int = 0
    meta: dict = field(default_factory=dict)
    key_id: str = ""  # id of the encryption key when the snapshot holds sealed chunks
    sealed_manifest: bool = False
    compression: str = ""  # the writer's algorithm when chunks may be stored compressed ("": all raw)

    def encode(self) -> bytes:
        d = asdict(self)
        d["v"] = COMPRESSED_VERSION if self.compression else RECORD_VERSION
        if not self.compression:
            del d["compression"]  # byte for byte what version 1 writers wrote
        d["manifest_chunks"] = list(self.manifest_chunks)
        return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()

    @property
    def ca(self) -> str:
        """The SPKI SHA-256 of the CA the snapshot's state holds; "" when unknown."""
        value = self.meta.get(CA_META)
        return value if isinstance(value, str) and valid_sha256(value) else ""

    @property
    def seq(self) -> int:
        """The commit sequence number (``history``); 0 for a record written before the field."""
        value = self.meta.get(SEQ_META)
        return value if type(value) is int and value > 0 else 0

    def summary(self) -> dict:
        """The fields ``statesync snapshots`` shows."""
        return {"id": self.id, "created": self.created, "files": self.files, "bytes": self.bytes,
                "node": self.node}


def decode_record(blob: bytes) -> Record:
    """Parse a stored record; raise CorruptData when it is malformed."""
    try:
        d = loads(blob)
        if not isinstance(d, dict) or type(d.get("v")) is not int:
            raise ValueError("unknown version")
        version = d.pop("v")
        if version not in (RECORD_VERSION, COMPRESSED_VERSION) or (version == COMPRESSED_VERSION) != bool(
                d.get("compression")):
            raise ValueError("unknown version")
        if not isinstance(d.get("manifest_chunks"), list):
            raise TypeError("manifest_chunks")
        d["manifest_chunks"] = tuple(d["manifest_chunks"])
        rec = Record(**d)
        _check_types(rec)
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptData(f"snapshot record is malformed ({type(exc).__name__})") from None
    if not SNAPSHOT_ID_RE.fullmatch(str(rec.id)) or not valid_sha256(str(rec.manifest_sha256)):
        raise CorruptData("snapshot record has a bad id or manifest digest")
    if not rec.manifest_chunks or not all(isinstance(c, str) and valid_sha256(c) for c in rec.manifest_chunks):
        raise CorruptData(f"snapshot {rec.id} has a bad manifest chunk list")
    return rec


def _check_types(rec: Record) -> None:
    for name in ("files", "dirs", "symlinks", "bytes", "manifest_size", "chunk_size"):
        value = getattr(rec, name)
        if type(value) is not int or value < 0:
            raise TypeError(name)
    if not isinstance(rec.sealed_manifest, bool):
        raise TypeError("sealed_manifest")
    for name in ("id", "node", "created", "parent", "manifest_sha256", "key_id", "compression"):
        if not isinstance(getattr(rec, name), str):
            raise TypeError(name)
    if not isinstance(rec.meta, dict):
        raise TypeError("meta")


def suspicious_drop(before: Record | None, files: int, size: int, max_drop: float) -> str | None:
    """Why a tree of ``files`` files and ``size`` bytes, after ``before``, looks like a lost volume
    rather than a change; None when it does not.

    A drop of more than ``max_drop`` (a fraction) of the files or of the bytes in one commit is
    what an unmounted or wiped volume looks like; committing it would make emptiness the
    newest snapshot, the one a rebuild restores. ``max_drop`` 1.0 never objects.
    """
    if before is None or max_drop >= 1.0:
        return None
    for what, old, new in (("files", before.files, files), ("bytes", before.bytes, size)):
        if old > 0 and (old - new) / old > max_drop:
            return (f"the tree lost {100 * (old - new) / old:.0f} % of its {what} since snapshot {before.id} "
                    f"({old} -> {new}), more than max_drop = {max_drop:g}")
    return None
