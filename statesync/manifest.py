"""The manifest: what a snapshot holds, path by path. Pure: no I/O.

Encoded as compact JSON, compressed with zlib, then cut into chunks like any
file. Decoding validates everything a restore will rely on, so a corrupted or
hostile manifest fails here with ``CorruptData`` / ``UnsafePath`` and never later.
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field

from .errors import CorruptData, UnsafePath
from .layout import valid_sha256

FORMAT_VERSION = 1
FILE, DIR, SYMLINK = "f", "d", "l"
_TYPES = (FILE, DIR, SYMLINK)
MAX_PATH_BYTES = 4096
MAX_DEPTH = 256
MAX_ENTRIES = 1_000_000
MAX_FILE_SIZE = 1 << 40
# Compressed manifests inflate far more than this only when built to exhaust memory.
MAX_MANIFEST_BYTES = 512 << 20


@dataclass(frozen=True)
class Entry:
    """One path in a snapshot. ``chunks`` lists the content chunks of a file in order."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    sha256: str = ""
    chunks: tuple[str, ...] = ()
    target: str = ""
    user: str = ""
    group: str = ""
    sealed: bool = False  # content encrypted; digests are keyed addresses (statesync.crypto)

    def same_content(self, other: "Entry") -> bool:
        """True when ``other`` has the same type and bytes (or link target)."""
        return (self.type, self.sha256, self.target, self.size) == (
            other.type, other.sha256, other.target, other.size)

    def same_metadata(self, other: "Entry") -> bool:
        """True when mode, ownership and mtime also agree."""
        return (self.mode, self.uid, self.gid, self.mtime_ns, self.user, self.group) == (
            other.mode, other.uid, other.gid, other.mtime_ns, other.user, other.group)


@dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def chunk_refs(self) -> set[str]:
        """Every content chunk the files of this manifest need."""
        refs: set[str] = set()
        for e in self.entries:
            refs.update(e.chunks)
        return refs

    def sealed_refs(self) -> set[str]:
        """The chunks of encrypted files."""
        return {d for e in self.entries if e.sealed for d in e.chunks}

    @property
    def file_count(self) -> int:
        return sum(1 for e in self.entries if e.type == FILE)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.type == FILE)


def check_path(path: object) -> str:
    """Return ``path`` if it is a safe root-relative POSIX path; raise UnsafePath otherwise."""
    if not isinstance(path, str) or not path:
        raise UnsafePath("manifest path is empty or not a string")
    if "\x00" in path:
        raise UnsafePath(f"manifest path {path!r} contains a NUL byte")
    if path.startswith("/"):
        raise UnsafePath(f"manifest path {path!r} is absolute")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePath(f"manifest path {path!r} escapes the root or is not normalised")
    try:
        encoded = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise UnsafePath(f"manifest path {path!r} is not encodable") from None
    if len(parts) > MAX_DEPTH or len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(f"manifest path {path[:80]!r}... is too deep or too long")
    return path


def _entry_to_json(e: Entry) -> dict:
    d: dict = {"p": e.path, "t": e.type, "m": e.mode, "u": e.uid, "g": e.gid, "mt": e.mtime_ns}
    if e.user:
        d["U"] = e.user
    if e.group:
        d["G"] = e.group
    if e.type == FILE:
        d["s"] = e.size
        d["h"] = e.sha256
        if e.chunks != (e.sha256,):
            d["c"] = list(e.chunks)
        if e.sealed:
            d["x"] = 1
    elif e.type == SYMLINK:
        d["l"] = e.target
    return d


def encode(manifest: Manifest) -> bytes:
    """Return the compressed manifest bytes, entries in path order."""
    doc = {"v": FORMAT_VERSION, "e": [_entry_to_json(e) for e in sorted(manifest.entries, key=lambda e: e.path)]}
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")
    return zlib.compress(raw, 6)


def _int(d: dict, key: str, lo: int, hi: int, path: str) -> int:
    v = d.get(key, 0)
    if type(v) is not int or not lo <= v <= hi:
        raise CorruptData(f"manifest entry {path!r}: field {key!r} is not an integer in range")
    return v


def _str(d: dict, key: str, path: str, limit: int = 256) -> str:
    v = d.get(key, "")
    if not isinstance(v, str) or len(v) > limit or "\x00" in v:
        raise CorruptData(f"manifest entry {path!r}: field {key!r} is not a valid string")
    return v


def _entry_from_json(d: object) -> Entry:
    if not isinstance(d, dict):
        raise CorruptData("manifest entry is not an object")
    path = check_path(d.get("p"))
    kind = d.get("t")
    if kind not in _TYPES:
        raise CorruptData(f"manifest entry {path!r}: unknown type {kind!r}")
    common = dict(path=path, type=kind, mode=_int(d, "m", 0, 0o7777, path),
                  uid=_int(d, "u", 0, 2**32 - 1, path), gid=_int(d, "g", 0, 2**32 - 1, path),
                  mtime_ns=_int(d, "mt", -(2**63), 2**63 - 1, path),
                  user=_str(d, "U", path), group=_str(d, "G", path))
    if kind == FILE:
        sha = d.get("h")
        if not isinstance(sha, str) or not valid_sha256(sha):
            raise CorruptData(f"manifest entry {path!r}: bad sha256")
        chunks = d.get("c", [sha])
        if not isinstance(chunks, list) or not all(isinstance(c, str) and valid_sha256(c) for c in chunks):
            raise CorruptData(f"manifest entry {path!r}: bad chunk list")
        size = _int(d, "s", 0, MAX_FILE_SIZE, path)
        if (size == 0) != (not chunks) or (len(chunks) == 1 and chunks[0] != sha):
            raise CorruptData(f"manifest entry {path!r}: size, digest and chunk list disagree")
        sealed = d.get("x", 0)
        if sealed not in (0, 1) or type(sealed) is not int:
            raise CorruptData(f"manifest entry {path!r}: bad encryption flag")
        return Entry(size=size, sha256=sha, chunks=tuple(chunks), sealed=bool(sealed), **common)
    if kind == SYMLINK:
        target = _str(d, "l", path, MAX_PATH_BYTES)
        if not target:
            raise CorruptData(f"manifest entry {path!r}: symlink without target")
        return Entry(target=target, **common)
    return Entry(**common)


def check_tree(entries: tuple[Entry, ...]) -> None:
    """Raise unless paths are unique and no entry lies below a symlink or a file."""
    kinds: dict[str, str] = {}
    for e in entries:
        if e.path in kinds:
            raise CorruptData(f"manifest lists {e.path!r} twice")
        kinds[e.path] = e.type
    for e in entries:
        parent = e.path.rpartition("/")[0]
        while parent:
            kind = kinds.get(parent)
            if kind == SYMLINK:
                raise UnsafePath(f"manifest path {e.path!r} leads through the symlink {parent!r}")
            if kind == FILE:
                raise CorruptData(f"manifest path {e.path!r} lies below the file {parent!r}")
            parent = parent.rpartition("/")[0]


def decode(blob: bytes) -> Manifest:
    """Parse and validate compressed manifest bytes; raise CorruptData/UnsafePath."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob, MAX_MANIFEST_BYTES)
        if inflater.unconsumed_tail:
            raise CorruptData("manifest inflates beyond the size limit")
        if not inflater.eof:
            raise CorruptData("manifest is truncated")
        if inflater.unused_data:
            raise CorruptData("manifest has trailing bytes after its compressed data")
        doc = json.loads(raw.decode("utf-8", "surrogateescape"))
    except (zlib.error, ValueError, RecursionError) as exc:
        raise CorruptData(f"manifest is not valid compressed JSON ({type(exc).__name__})") from None
    if (not isinstance(doc, dict) or type(doc.get("v")) is not int or doc["v"] != FORMAT_VERSION
            or not isinstance(doc.get("e"), list)):
        raise CorruptData("manifest has an unknown format version or no entry list")
    if len(doc["e"]) > MAX_ENTRIES:
        raise CorruptData("manifest has too many entries")
    entries = tuple(_entry_from_json(d) for d in doc["e"])
    check_tree(entries)
    return Manifest(entries)
