"""The manifest: what a snapshot holds, path by path, and its encoding. Pure: no I/O.

Encoded as compact JSON, compressed with zlib, then cut into chunks like any
file. Reading it back, with every check a restore relies on, is ``manifest_reader``.
"""
from __future__ import annotations

import json
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..errors import UnsafePath

FORMAT_VERSION = 1
FILE, DIR, SYMLINK = "f", "d", "l"
TYPES = (FILE, DIR, SYMLINK)
# No depth limit and no PATH_MAX: a restore walks with directory descriptors, so any tree the
# filesystem holds can come back (a single name over 255 bytes the OS refuses on its own). The
# bound on a whole path only keeps one hostile entry from costing megabytes of work.
MAX_PATH_BYTES = 1 << 20
# The kernel refuses symlink targets of PATH_MAX bytes or more.
MAX_LINK_TARGET = 4096
MAX_FILE_SIZE = 1 << 40


# Slots: a restore holds every entry of the tree, and a dict per entry would double that.
@dataclass(frozen=True, slots=True)
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
    link: str = ""  # a file: the path of the entry it is a hard link of (first in tree_order)

    def same_content(self, other: "Entry") -> bool:
        """True when ``other`` has the same type and bytes (or link target)."""
        return (self.type, self.sha256, self.target, self.size) == (
            other.type, other.sha256, other.target, other.size)

    def same_metadata(self, other: "Entry") -> bool:
        """True when mode, ownership and mtime also agree."""
        return (self.mode, self.uid, self.gid, self.mtime_ns, self.user, self.group) == (
            other.mode, other.uid, other.gid, other.mtime_ns, other.user, other.group)


def tree_order(path: str) -> str:
    """Sort key of the depth-first order in which a walk meets paths (a directory's whole
    subtree before its next sibling): ``/`` sorts before every character of a name."""
    return path.replace("/", "\x00")


def tree_ordered(entries: tuple[Entry, ...] | list[Entry]) -> tuple[Entry, ...] | list[Entry]:
    """``entries`` in tree order (``tree_order``), the order a restore writes them in.

    A manifest is stored in path order, which is tree order unless a name sorts below "/"
    ("a-b" beside a directory "a"): checked first, a pair of keys at a time, such entries
    come back as they are, without a sorted copy or a copy of every path as its key."""
    previous = ""
    for e in entries:
        key = tree_order(e.path)
        if key <= previous:
            return sorted(entries, key=lambda e: tree_order(e.path))
        previous = key
    return entries


@dataclass(frozen=True)
class Tally:
    """What a commit counts over every entry, counted once as a scan assembles them."""

    files: int = 0
    bytes: int = 0
    dirs: int = 0
    symlinks: int = 0
    sealed: bool = False


def tally_of(entries: Iterable[Entry], files: int = 0, size: int = 0) -> Tally:
    """The counts of ``entries``, on top of ``files`` plain files of ``size`` bytes counted elsewhere."""
    dirs = symlinks = 0
    sealed = False
    for e in entries:
        if e.type == FILE:
            files, size, sealed = files + 1, size + e.size, sealed or e.sealed
        elif e.type == DIR:
            dirs += 1
        elif e.type == SYMLINK:
            symlinks += 1
    return Tally(files, size, dirs, symlinks, sealed)


class Entries(Sequence):
    """A scan's entries in path order, each built from its token (``Manifest.tokens``) only when
    asked for. A commit walks them a few times but never holds them all: 300,000 entries of
    about 200 bytes each were the peak of a daemon's first commit of that many files. Slices
    are tuples, and it equals the tuple of the same entries."""

    __slots__ = ("paths", "tokens", "tally", "_build", "_refs")

    def __init__(self, paths: list[str], tokens: tuple[object, ...], build: Callable[[str, object], Entry],
                 tally: Tally, refs: Callable[[], set[str]]):
        self.paths, self.tokens, self.tally, self._build, self._refs = paths, tokens, tally, build, refs

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(map(self._build, self.paths[i], self.tokens[i]))
        return self._build(self.paths[i], self.tokens[i])

    def __iter__(self) -> Iterator[Entry]:
        return map(self._build, self.paths, self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (tuple, list, Entries)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def find(self, paths: Iterable[str]) -> dict[str, Entry]:
        out = {}
        for p in paths:
            i = bisect_left(self.paths, p)
            if i < len(self.paths) and self.paths[i] == p:
                out[p] = self[i]
        return out

    def chunk_refs(self) -> set[str]:
        return self._refs()


@dataclass(frozen=True)
class Manifest:
    # A tuple, or a scan's Entries, which build each entry when it is asked for.
    entries: tuple[Entry, ...] | Entries = field(default_factory=tuple)
    # The root directory's own mode, owner and mtime (path "."); None in manifests written
    # before it was recorded, which restore as they always did.
    root: Entry | None = None
    # Beside each entry, an object that stays the same (identical) for as long as the entry
    # does: the scanner's packed record of a file, from which it builds the entry again for
    # each manifest. ``Encoder`` reuses a segment whose tokens are the same; () when unknown.
    tokens: tuple[object, ...] = field(default=(), compare=False, repr=False)

    def by_path(self) -> dict[str, Entry]:
        return {e.path: e for e in self.entries}

    def find(self, *paths: str) -> dict[str, Entry]:
        """The entries of ``paths`` that the manifest holds, by path: one pass and no table of
        every path (``by_path``), which costs a commit of a large tree tens of megabytes."""
        if isinstance(self.entries, Entries):
            return self.entries.find(paths)
        wanted = set(paths)
        return {e.path: e for e in self.entries if e.path in wanted}

    def chunk_refs(self) -> set[str]:
        """Every content chunk the files of this manifest need."""
        if isinstance(self.entries, Entries):
            return self.entries.chunk_refs()
        refs: set[str] = set()
        for e in self.entries:
            refs.update(e.chunks)
        return refs

    def sealed_refs(self) -> set[str]:
        """The chunks of encrypted files."""
        return {d for e in self.entries if e.sealed for d in e.chunks}

    @property
    def tally(self) -> Tally:
        return self.entries.tally if isinstance(self.entries, Entries) else tally_of(self.entries)

    @property
    def file_count(self) -> int:
        return self.tally.files

    @property
    def total_bytes(self) -> int:
        return self.tally.bytes


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
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePath(f"manifest path {path[:80]!r}... is too long")
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
        if e.link:
            d["k"] = e.link
    elif e.type == SYMLINK:
        d["l"] = e.target
    return d


def _root_to_json(e: Entry) -> bytes:
    d: dict = {"m": e.mode, "u": e.uid, "g": e.gid, "mt": e.mtime_ns}
    if e.user:
        d["U"] = e.user
    if e.group:
        d["G"] = e.group
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")


def encode(manifest: Manifest) -> bytes:
    """Return the compressed manifest bytes, entries in path order (``Encoder`` explains the stream)."""
    return b"".join(Encoder().pieces(manifest, 1 << 62))


# The compressed manifest is one zlib stream of the compact JSON document. It is cut into
# segments at content-defined entries (where a hash of the path has its low bits set):
# each segment is deflated on its own and ends with a full flush, so its bytes depend on
# its entries only. A change to one file changes one segment and the stream's end (its
# adler32), not everything after the change: an incremental commit rewrites those two
# pieces instead of the whole manifest. Readers just concatenate the pieces (FORMAT.md).
_ZLIB_HEADER = b"\x78\x9c"  # deflate, 32 KiB window, default level
_DOC_START = b'{"v":%d,"e":[' % FORMAT_VERSION


def _doc_end(root: Entry | None) -> bytes:
    # The root's record follows the entry list, so it lives in the stream's small end piece
    # that every commit rewrites anyway: a changed root mtime costs no segment.
    return b"]}" if root is None else b'],"r":' + _root_to_json(root) + b"}"


def _segment_mask(entries: int) -> int:
    """About 16 segments (at least 1,024 entries each on average): few pieces to read back."""
    return (1 << max(10, (entries // 16).bit_length())) - 1


# Entries turned into JSON at a time: json.dumps holds every token of its text as a string of
# its own before joining them (about 1.3 KiB an entry), and a segment has a sixteenth of the
# tree's entries, so a whole segment at once was the peak of a first commit of many files.
_JSON_SLICE = 256


def _deflate_segment(entries, start: int, end: int, first: bool) -> tuple[int, int, bytes]:
    """The adler32 and length of the JSON text of ``entries[start:end]`` (opened by the document's
    start for the first segment, else by the comma after the one before) and its deflated bytes,
    ending with a full flush. Deflate's output does not depend on how its input is cut."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    head = _DOC_START if first else b","
    adler, length, out = zlib.adler32(head), len(head), [deflate.compress(head)]
    for a in range(start, end, _JSON_SLICE):
        body = json.dumps([_entry_to_json(e) for e in entries[a:min(end, a + _JSON_SLICE)]],
                          separators=(",", ":"), ensure_ascii=False)
        raw = (b"," if a > start else b"") + body[1:-1].encode("utf-8", "surrogateescape")
        del body
        adler, length = zlib.adler32(raw, adler), length + len(raw)
        out.append(deflate.compress(raw))
    out.append(deflate.flush(zlib.Z_FULL_FLUSH))
    return adler, length, b"".join(out)


class Encoder:
    """Encodes manifests into pieces whose concatenation is ``encode``'s output.

    Keeps the compressed segments of the last manifest it encoded, keyed by the identity
    of their entries' tokens (``Manifest.tokens``, else the entries themselves), so that
    encoding the next one recompresses only the segments that changed.
    """

    def __init__(self) -> None:
        # (first segment?, id of its first token) -> (its tokens, adler32 and length of its
        # JSON text, its compressed bytes): not the text itself, which a daemon would hold for
        # every file between its commits (about 200 bytes each), nor the entries.
        self._segments: dict[tuple, tuple[tuple[object, ...], int, int, bytes]] = {}

    def pieces(self, manifest: Manifest, max_piece: int) -> list[bytes]:
        """The compressed manifest in pieces of at most ``max_piece`` bytes: one piece when it
        fits; else each segment's bytes (the first with the zlib header), then the stream's end."""
        entries: Sequence[Entry] = manifest.entries
        tokens: Sequence[object] = manifest.tokens
        if isinstance(entries, Entries):
            paths: Iterable[str] = entries.paths  # sorted and unique: a scan's dictionary keys
            tokens = entries.tokens
        else:
            if any(entries[i].path >= entries[i + 1].path for i in range(len(entries) - 1)):
                entries = sorted(entries, key=lambda e: e.path)
                tokens = entries
            elif len(tokens) != len(entries):
                tokens = entries
            paths = (e.path for e in entries)
        mask = _segment_mask(len(entries))
        ends: list[int] = []  # where each segment ends
        for n, path in enumerate(paths, 1):
            if zlib.crc32(path.encode("utf-8", "surrogateescape")) & mask == mask:
                ends.append(n)
        if not ends or ends[-1] != len(entries):
            ends.append(len(entries))
        cache: dict[tuple, tuple[tuple[object, ...], int, int, bytes]] = {}
        compressed: list[bytes] = []
        adler = 1
        segments = [(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True) if b > a]
        for i, (start, end) in enumerate(segments):
            toks = tuple(tokens[start:end])
            key = (i == 0, id(toks[0]))  # the tokens are kept alive by the cache: ids stay theirs
            hit = self._segments.get(key)
            if hit is None or len(hit[0]) != len(toks) or any(a is not b for a, b in zip(hit[0], toks, strict=True)):
                hit = (toks, *_deflate_segment(entries, start, end, first=i == 0))
            cache[key] = hit
            adler = adler32_combine(adler, hit[1], hit[2])
            compressed.append(hit[3])
        self._segments = cache
        tail = _doc_end(manifest.root) if segments else _DOC_START + _doc_end(manifest.root)
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        end = deflate.compress(tail) + deflate.flush(zlib.Z_FINISH) + zlib.adler32(tail, adler).to_bytes(4, "big")
        if compressed:
            compressed[0] = _ZLIB_HEADER + compressed[0]
        else:
            end = _ZLIB_HEADER + end
        if sum(map(len, compressed)) + len(end) <= max_piece:
            return [b"".join(compressed) + end]
        out: list[bytes] = []
        for part in (*compressed, end):
            out += [part[i:i + max_piece] for i in range(0, len(part), max_piece)]
        return out


_ADLER_BASE = 65521


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """The adler32 of two texts joined, from each one's adler32 and the second's length
    (zlib's ``adler32_combine``, which Python's zlib does not expose)."""
    rem = len2 % _ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + _ADLER_BASE - rem) % _ADLER_BASE
    return sum1 | (sum2 << 16)
