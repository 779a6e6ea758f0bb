"""Reading the tree under --root into manifest entries, rereading only what changed.

A ``Scanner`` remembers each path's stat signature; a path whose size, mtime,
ctime and inode are unchanged keeps its digest without being read again. Chunks
of content that was read and that the store does not know yet are kept in memory
until the commit uploads them.
"""
from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import structlog

from . import chunking
from .crypto import Sealing
from .globs import PathFilter
from .manifest import DIR, FILE, SYMLINK, Entry, Manifest

log = structlog.get_logger(__name__)

# Our own working directories inside the root never belong in a snapshot.
INTERNAL_PREFIX = ".statesync-"


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _sig(st: os.stat_result) -> tuple:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_uid, st.st_gid)


@dataclass
class ScanResult:
    manifest: Manifest
    new_chunks: dict[str, bytes] = field(default_factory=dict)
    files_read: int = 0
    # secrets (private keys) read in this scan that go to Consul unencrypted
    plain_secrets: list[str] = field(default_factory=list)


class Scanner:
    """Turns the tree under ``root`` into a Manifest, remembering what it has read."""

    def __init__(self, root: Path, path_filter: PathFilter, chunk_size: int, sealing: Sealing | None = None):
        self.root = Path(root)
        self._root_str = str(self.root)
        self.filter = path_filter
        self.chunk_size = chunk_size
        self.sealing = sealing
        self._entries: dict[str, tuple[tuple, Entry]] = {}
        self._sink: Callable[[str, bytes], None] | None = None

    def forget(self) -> None:
        """Drop the stat cache so the next scan reads every file again."""
        self._entries.clear()

    def scan(self, known: Container[str], dirty: Iterable[str] | None = None,
             sink: Callable[[str, bytes], None] | None = None) -> ScanResult:
        """Scan the whole tree, or only the ``dirty`` root-relative paths and their subtrees.

        ``known`` holds chunk digests already in the store; other chunks read are returned
        in ``new_chunks``, and each is also passed to ``sink(digest, chunk)`` as soon as it is
        read (once), so that uploading can overlap the reading. Raises OSError when the root
        itself cannot be read, and whatever ``sink`` raises.
        """
        result = ScanResult(Manifest())
        self._sink = sink
        try:
            if dirty is None:
                fresh: dict[str, tuple[tuple, Entry]] = {}
                self._walk("", fresh, known, result)
                self._entries = fresh
            else:
                for rel in sorted(set(dirty)):
                    self._rescan(rel, known, result)
        finally:
            self._sink = None
        result.manifest = Manifest(tuple(e for _, (_, e) in sorted(self._entries.items())))
        return result

    def _wanted(self, rel: str, is_dir: bool, ancestors: bool = True) -> bool:
        return not rel.startswith(INTERNAL_PREFIX) and self.filter.wanted(rel, is_dir, ancestors)

    def _rescan(self, rel: str, known: Container[str], result: ScanResult) -> None:
        """Refresh one path. A directory seen before (same inode) refreshes only itself:
        its children carry their own events. A new or replaced directory is walked."""
        if not rel or rel.startswith(INTERNAL_PREFIX):
            return
        try:
            st = os.lstat(self.root / rel)
        except FileNotFoundError:
            st = None
        if st is not None and not self._wanted(rel, stat.S_ISDIR(st.st_mode)):
            st = None
        parent = rel.rpartition("/")[0]
        if st is None or (parent and parent not in self._entries):
            self._drop(rel)
            return
        cached = self._entries.get(rel)
        known_dir = (cached is not None and cached[1].type == DIR and stat.S_ISDIR(st.st_mode)
                     and cached[0][4] == st.st_ino)
        fresh: dict[str, tuple[tuple, Entry]] = {}
        if self._add(rel, st, fresh, known, result) and stat.S_ISDIR(st.st_mode) and not known_dir:
            self._walk(rel, fresh, known, result)
        if not known_dir:
            self._drop(rel)
        self._entries.update(fresh)

    def _drop(self, rel: str) -> None:
        below = rel + "/"
        for key in [k for k in self._entries if k == rel or k.startswith(below)]:
            del self._entries[key]

    def _walk(self, rel_dir: str, into: dict, known: Container[str], result: ScanResult) -> None:
        path = self.root / rel_dir if rel_dir else self.root
        try:
            it = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            if not rel_dir:
                raise
            return
        with it:
            children = sorted(it, key=lambda d: d.name)
        for d in children:
            rel = f"{rel_dir}/{d.name}" if rel_dir else d.name
            try:
                st = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not self._wanted(rel, stat.S_ISDIR(st.st_mode), ancestors=False):
                continue
            if self._add(rel, st, into, known, result) and stat.S_ISDIR(st.st_mode):
                self._walk(rel, into, known, result)

    def _add(self, rel: str, st: os.stat_result, into: dict, known: Container[str], result: ScanResult) -> bool:
        sig = _sig(st)
        cached = self._entries.get(rel)
        if cached and cached[0] == sig and not stat.S_ISDIR(st.st_mode):
            into[rel] = cached
            return True
        common = dict(path=rel, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                      mtime_ns=st.st_mtime_ns, user=user_name(st.st_uid), group=group_name(st.st_gid))
        if stat.S_ISDIR(st.st_mode):
            entry = Entry(type=DIR, **common)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(self.root / rel)
            except FileNotFoundError:
                return False
            entry = Entry(type=SYMLINK, target=target, **common)
        elif stat.S_ISREG(st.st_mode):
            entry, sig = self._read_file(rel, common, known, result)
            if entry is None:
                return False
        else:
            log.info("skipping special file", path=rel)
            return False
        into[rel] = (sig, entry)
        return True

    def _read_file(self, rel: str, common: dict, known: Container[str], result: ScanResult):
        """Read a file whole; a file that changes while read is read again, up to three times."""
        path = f"{self._root_str}/{rel}"
        for _ in range(3):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (FileNotFoundError, OSError) as exc:
                if isinstance(exc, FileNotFoundError) or exc.errno in (40,):  # ELOOP: replaced by a link
                    return None, None
                raise
            try:
                before = os.fstat(fd)
                # One read() for the whole file; one byte more shows at once that it grew.
                data = os.read(fd, before.st_size + 1)
                if len(data) != before.st_size:  # grew, shrank, or too big for one read(): read to the end
                    parts = [data]
                    while piece := os.read(fd, 1 << 24):
                        parts.append(piece)
                    data = b"".join(parts)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if _sig(before) == _sig(after) and len(data) == after.st_size:
                break
        else:
            log.warning("file kept changing while read; taking the last read", path=rel)
        result.files_read += 1
        sealing = self.sealing
        sealed = sealing is not None and sealing.wants(rel, data)
        if sealed:
            digest, pieces = chunking.address(data, self.chunk_size, sealing.sealer.address)
        elif self._sink is not None and len(data) > self.chunk_size:
            # A large file: hand each piece on as soon as it is hashed, so that uploading it
            # overlaps hashing the rest (and the whole), instead of following it.
            pieces = []
            for piece in chunking.split(data, self.chunk_size):
                d = chunking.sha256(piece)
                pieces.append((d, piece))
                if d not in known and d not in result.new_chunks:
                    result.new_chunks[d] = piece
                    self._sink(d, piece)
            digest = chunking.sha256(data)
        else:
            digest, pieces = chunking.address(data, self.chunk_size)
        if not sealed and sealing is not None and sealing.is_secret(rel, data):
            result.plain_secrets.append(rel)
        for d, piece in pieces:
            if d not in known and d not in result.new_chunks:
                result.new_chunks[d] = sealing.sealer.seal(sealing.node, d, piece) if sealed else piece
                if self._sink is not None:
                    self._sink(d, result.new_chunks[d])
        common.update(mode=stat.S_IMODE(after.st_mode), mtime_ns=after.st_mtime_ns)
        entry = Entry(type=FILE, size=len(data), sha256=digest, chunks=tuple(d for d, _ in pieces),
                      sealed=sealed, **common)
        return entry, _sig(after)
