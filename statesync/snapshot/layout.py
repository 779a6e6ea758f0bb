"""The one place that defines where things live in Consul KV.

    <prefix>/nodes/<node>/head                  JSON snapshot record of the latest snapshot
    <prefix>/nodes/<node>/snapshots/<id>        JSON snapshot record, one per kept snapshot
    <prefix>/nodes/<node>/chunks/<sha256>       content chunk (file data or manifest data)
    <prefix>/nodes/<node>/gc                    JSON: unreferenced chunks and when first seen
    <prefix>/nodes/<node>/lock                  the writer lock: held by one sidecar's Consul session
    <prefix>/nodes/<node>/pins                  JSON: the ids of pinned snapshots, never pruned
    <prefix>/ca                                 the published CA (written by master sidecars)
    <prefix>/ca-accept                          a pending operator decision to publish another CA key
    <prefix>/ca-history                         the CAs published before, newest first

Chunks live under the node so that an ACL policy can grant a node its own prefix
and nothing else. Pure functions only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\Z")
_SHA_RE = re.compile(r"^[0-9a-f]{64}\Z")
SNAPSHOT_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}\Z")


def valid_node(name: str) -> bool:
    """Return True when ``name`` is usable as a node name in a KV key."""
    return bool(_NODE_RE.fullmatch(name)) and name not in (".", "..")


def valid_prefix(prefix: str) -> bool:
    """Return True for a KV prefix like ``statesync/icinga2`` (no leading or trailing /)."""
    return bool(_PREFIX_RE.fullmatch(prefix)) and ".." not in prefix.split("/")


def valid_sha256(text: str) -> bool:
    """Return True for 64 lowercase hex digits."""
    return bool(_SHA_RE.fullmatch(text))


@dataclass(frozen=True)
class Layout:
    """Key names for one cluster prefix and one node."""

    prefix: str
    node: str

    @property
    def node_root(self) -> str:
        return f"{self.prefix}/nodes/{self.node}/"

    @property
    def head(self) -> str:
        return f"{self.node_root}head"

    @property
    def snapshots(self) -> str:
        return f"{self.node_root}snapshots/"

    def snapshot(self, snapshot_id: str) -> str:
        return f"{self.snapshots}{snapshot_id}"

    @property
    def chunks(self) -> str:
        return f"{self.node_root}chunks/"

    def chunk(self, digest: str) -> str:
        return f"{self.chunks}{digest}"

    @property
    def gc(self) -> str:
        return f"{self.node_root}gc"

    @property
    def lock(self) -> str:
        return f"{self.node_root}lock"

    @property
    def pins(self) -> str:
        return f"{self.node_root}pins"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}/nodes/"

    @property
    def ca(self) -> str:
        return f"{self.prefix}/ca"

    @property
    def ca_accept(self) -> str:
        return f"{self.prefix}/ca-accept"

    @property
    def ca_history(self) -> str:
        return f"{self.prefix}/ca-history"

    @property
    def satellites(self) -> str:
        """Where satellites register for enrolment, one key per CN (docs/ENROL.md)."""
        return f"{self.prefix}/satellites/"

    def satellite(self, cn: str) -> str:
        return f"{self.satellites}{cn}"

    def nodes_with_snapshots(self, keys) -> list[str]:
        """The names of the nodes that have a head or a snapshot record among ``keys`` (sorted)."""
        found = set()
        for key in keys:
            parts = key[len(self.nodes):].split("/") if key.startswith(self.nodes) else []
            if len(parts) >= 2 and valid_node(parts[0]) and (
                    parts[1:] == ["head"] or (parts[1] == "snapshots" and len(parts) == 3
                                              and SNAPSHOT_ID_RE.fullmatch(parts[2]))):
                found.add(parts[0])
        return sorted(found)

    def for_node(self, node: str) -> "Layout":
        """Return the layout of another node under the same prefix."""
        return Layout(self.prefix, node)

    def digest_of_chunk_key(self, key: str) -> str | None:
        """Return the sha256 a chunk key names, or None if ``key`` is not a chunk key."""
        if not key.startswith(self.chunks):
            return None
        digest = key[len(self.chunks):]
        return digest if valid_sha256(digest) else None

    def snapshot_id_of_key(self, key: str) -> str | None:
        """Return the snapshot id a snapshot key names, or None."""
        if not key.startswith(self.snapshots):
            return None
        sid = key[len(self.snapshots):]
        return sid if SNAPSHOT_ID_RE.fullmatch(sid) else None
