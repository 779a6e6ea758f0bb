"""Reading a manifest back. Pure: no I/O.

Decoding validates everything a restore will rely on, so a corrupted or hostile manifest
fails here with ``CorruptData`` / ``UnsafePath`` and never later; it reads the stream piece by
piece within the bounds of ``limits``.
"""
from __future__ import annotations

import codecs
import hashlib
import zlib
from collections.abc import Callable, Mapping
from itertools import islice

from ..errors import CorruptData, StreamError, UnsafePath
from . import limits
from .jsonstream import ObjectStream
from .layout import valid_sha256
from .manifest import (
    DIR,
    FILE,
    FORMAT_VERSION,
    MAX_FILE_SIZE,
    MAX_LINK_TARGET,
    SYMLINK,
    TYPES,
    Entry,
    Manifest,
    check_path,
    tree_order,
    tree_ordered,
)


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


_ONE_CHUNK = object()  # "c" left out


def _entry_from_json(d: object, same: dict) -> Entry:
    """The entry ``d`` stands for; ``same`` gives back the first of equal owners, modes, sizes
    and digests met, so that a tree holds each once however many entries repeat it."""
    if not isinstance(d, dict):
        raise CorruptData("manifest entry is not an object")
    path = check_path(d.get("p"))
    kind = d.get("t")
    if kind not in TYPES:
        raise CorruptData(f"manifest entry {path!r}: unknown type {kind!r}")
    # Positional construction and no helper dict: a restore decodes every entry of the tree.
    mode, uid, gid = _int(d, "m", 0, 0o7777, path), _int(d, "u", 0, 2**32 - 1, path), _int(d, "g", 0, 2**32 - 1, path)
    mode, uid, gid = same.setdefault(mode, mode), same.setdefault(uid, uid), same.setdefault(gid, gid)
    mtime_ns = _int(d, "mt", -(2**63), 2**63 - 1, path)
    user, group = _str(d, "U", path), _str(d, "G", path)
    user, group = same.setdefault(user, user), same.setdefault(group, group)
    if kind == FILE:
        sha = d.get("h")
        if not isinstance(sha, str) or not valid_sha256(sha):
            raise CorruptData(f"manifest entry {path!r}: bad sha256")
        sha = same.setdefault(sha, sha)
        size = _int(d, "s", 0, MAX_FILE_SIZE, path)
        size = same.setdefault(size, size)  # small files repeat their sizes
        chunks = d.get("c", _ONE_CHUNK)
        if chunks is _ONE_CHUNK:  # one chunk named like the file: checked just above
            chunks = (sha,)
        elif not isinstance(chunks, list) or not all(isinstance(c, str) and valid_sha256(c) for c in chunks):
            raise CorruptData(f"manifest entry {path!r}: bad chunk list")
        elif len(chunks) > limits.max_chunks(size):
            raise CorruptData(f"manifest entry {path!r}: {len(chunks)} chunks for {size} bytes")
        else:
            chunks = tuple(same.setdefault(c, c) for c in chunks)
        if (size == 0) != (not chunks) or (len(chunks) == 1 and chunks[0] != sha):
            raise CorruptData(f"manifest entry {path!r}: size, digest and chunk list disagree")
        sealed = d.get("x", 0)
        if sealed not in (0, 1) or type(sealed) is not int:
            raise CorruptData(f"manifest entry {path!r}: bad encryption flag")
        link = d.get("k", "")
        if link:
            check_path(link)
        elif link != "":
            raise CorruptData(f"manifest entry {path!r}: bad hard link")
        return Entry(path, kind, mode, uid, gid, mtime_ns, size, sha, chunks, "", user, group, bool(sealed), link)
    if kind == SYMLINK:
        target = _str(d, "l", path, MAX_LINK_TARGET)
        if not target:
            raise CorruptData(f"manifest entry {path!r}: symlink without target")
        return Entry(path, kind, mode, uid, gid, mtime_ns, target=target, user=user, group=group)
    return Entry(path, kind, mode, uid, gid, mtime_ns, user=user, group=group)


def _root_from_json(d: object) -> Entry:
    if not isinstance(d, dict):
        raise CorruptData("manifest root is not an object")
    return Entry(".", DIR, _int(d, "m", 0, 0o7777, "."), _int(d, "u", 0, 2**32 - 1, "."),
                 _int(d, "g", 0, 2**32 - 1, "."), _int(d, "mt", -(2**63), 2**63 - 1, "."),
                 user=_str(d, "U", "."), group=_str(d, "G", "."))


def check_tree(entries: tuple[Entry, ...]) -> None:
    """Raise unless paths are unique, no entry lies below a symlink or a file, and every hard
    link names a file entry met before it in tree_order with the same content."""
    # In tree order what lies below a path comes right after it: one pass over the sorted
    # paths, linear in their length however deep they go (a parent walk per path is not).
    below, kind, previous = "", "", None
    linked: list[Entry] = []
    for e in tree_ordered(entries):
        if below and e.path.startswith(below):
            if kind == SYMLINK:
                raise UnsafePath(f"manifest path {e.path!r} leads through the symlink {below[:-1]!r}")
            raise CorruptData(f"manifest path {e.path!r} lies below the file {below[:-1]!r}")
        if e.path == previous:
            raise CorruptData(f"manifest lists {e.path!r} twice")
        below, kind, previous = ("", "", e.path) if e.type == DIR else (e.path + "/", e.type, e.path)
        if e.link:
            linked.append(e)
    if linked:
        files = {e.path: e for e in entries if e.type == FILE}
        for e in linked:
            first = files.get(e.link)
            if (first is None or first.link or tree_order(first.path) >= tree_order(e.path)
                    or (first.sha256, first.size, first.chunks, first.sealed) != (e.sha256, e.size, e.chunks, e.sealed)):
                raise CorruptData(f"manifest entry {e.path!r}: hard link to {e.link!r}, "
                                  "which is no earlier file with the same content")


_STEP = 1 << 20  # inflate this much at a time: a bomb is caught a megabyte past its bound


class Decoder:
    """Decodes a compressed manifest fed in pieces, in order: ``feed`` each, then ``result``.

    The stream is inflated a megabyte at a time and its entries parsed one by one as their
    text completes (``jsonstream``), each checked and counted against ``limits`` as it comes:
    memory holds the decoded entries and about one entry's text, never the whole document,
    and a manifest past a bound fails as soon as it gets there. Raises CorruptData/UnsafePath.
    """

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj()
        self._text = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._stream = ObjectStream("e", self._entry, self._member, limits.MAX_VALUE_CHARS)
        self.tally = limits.Tally()
        self._entries: list[Entry] = []
        self._members: dict[str, object] = {}
        self._same: dict = {}
        self._last_key: str | None = ""  # tree_order of the last entry while they come in tree order

    def feed(self, piece: bytes) -> None:
        self._count("stored", len(piece))
        try:
            data, inflater = piece, self._inflater
            while True:
                if inflater.eof:
                    if data or inflater.unused_data:
                        raise CorruptData("manifest has trailing bytes after its compressed data")
                    return
                out = inflater.decompress(data, _STEP)
                data = inflater.unconsumed_tail
                if out:
                    self._count("inflated", len(out))
                    self._stream.feed(self._text.decode(out))
                if not data and len(out) < _STEP:
                    return
        except zlib.error:
            raise CorruptData("manifest is not valid compressed JSON (zlib error)") from None
        except StreamError as exc:
            raise CorruptData(f"manifest {exc}") from None

    def result(self) -> Manifest:
        if not self._inflater.eof:
            raise CorruptData("manifest is truncated")
        try:
            self._stream.feed(self._text.decode(b"", True))
            self._stream.close()
        except StreamError as exc:
            raise CorruptData(f"manifest {exc}") from None
        version = self._members.get("v")
        if type(version) is not int or version != FORMAT_VERSION or not self._stream.saw_list or "e" in self._members:
            raise CorruptData("manifest has an unknown format version or no entry list")
        entries, self._entries, self._same = tuple(self._entries), [], {}
        check_tree(entries)
        root = self._members.get("r")
        return Manifest(entries, None if root is None else _root_from_json(root))

    def _count(self, what: str, n: int) -> None:
        setattr(self.tally, what, getattr(self.tally, what) + n)
        why = self.tally.excess()
        if why is not None:
            raise CorruptData(f"manifest {why}")

    def _entry(self, d: object) -> None:
        known = len(self._same)
        e = _entry_from_json(d, self._same)
        self._entries.append(e)
        # The values the entry added to the table are its last keys: the decoder keeps them once.
        new = tuple(islice(reversed(self._same), len(self._same) - known))
        self.tally.entries += 1
        self.tally.chunk_refs += len(e.chunks)
        if self._last_key is not None:  # entries that come in tree order are never sorted (``tree_ordered``)
            key = tree_order(e.path)
            self._last_key = key if key > self._last_key else None
        self.tally.add(*limits.entry_memory(e, (e.path, e.target, e.link, e.chunks, e.mtime_ns), e.path, new),
                       needs_sort=self._last_key is None)
        self._count("memory", 0)
        if len(self._same) >= limits.MAX_VALUES:
            # Emptied when full: values met again (owners, modes) come back at the next entry,
            # and a tree of files each of its own digest costs no table place per file.
            self._same.clear()
            self.tally.table = 0

    def _member(self, key: str, value: object) -> None:
        if key in ("v", "r", "e"):  # "e" here is no array; other members are additions a reader ignores
            self._members[key] = value


# Pieces fetched at a time: a batch's bytes must not rest on the record's word, and any
# piece may be as large as a chunk can be. 8 pieces of at most 511 KiB: about 4 MiB.
LOAD_BATCH = 8


def load(names: tuple[str, ...], fetch: Callable[[set[str]], Mapping[str, bytes]], digest: str) -> Manifest | None:
    """The manifest stored as the pieces ``names`` (in order), fetched ``LOAD_BATCH`` at a time
    with ``fetch`` (verified chunks by address) and decoded as they come: memory holds a batch
    and the decoded entries, never the whole stored or inflated manifest. None when the
    pieces joined do not hash to ``digest``. Raises CorruptData/UnsafePath."""
    decoder, whole = Decoder(), hashlib.sha256()
    for start in range(0, len(names), LOAD_BATCH):
        batch = names[start:start + LOAD_BATCH]
        pieces = fetch(set(batch))
        for name in batch:
            whole.update(pieces[name])
            decoder.feed(pieces[name])
    return decoder.result() if whole.hexdigest() == digest else None


def decode(blob: bytes) -> Manifest:
    """Parse and validate compressed manifest bytes; raise CorruptData/UnsafePath."""
    decoder = Decoder()
    decoder.feed(blob)
    return decoder.result()
