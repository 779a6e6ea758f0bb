"""Reading the tree under --root into manifest entries, rereading only what changed.

A ``Scanner`` remembers each path's stat signature; a path whose size, mtime, ctime and inode
are unchanged keeps its digest without being read again, unless its timestamps were too recent
to prove that when it was read (``RACY_NS``). Files are read a chunk at a time; chunks the store
does not know yet are kept in memory until the commit uploads them, or a sink wrote them.

The walk is iterative, from directory descriptor to directory descriptor (openat): neither the
tree's depth nor its paths' length has a limit of ours; what the OS refuses is an OSError naming the whole path.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from ..disk import INTERNAL_PREFIX  # statesync's own files in a root never belong in a snapshot
from ..snapshot import chunking, codec
from ..snapshot.manifest import DIR, FILE, SYMLINK, Entries, Entry, Manifest, tree_order
from . import records
from .dirfd import DIR_FLAGS, GONE, DirChain, open_below
from .fileinfo import await_writes, file_id, group_name, inode, linked_file, same_read, signature, user_name
from .globs import PathFilter
from .sealing import Sealing

log = structlog.get_logger(__name__)

# The coarsest timestamps a Linux filesystem keeps are 2 s apart (FAT); ext3, ext4 with
# 128-byte inodes and HFS+ keep whole seconds, and kernels before 6.13 stamp even ext4, XFS
# and tmpfs from the clock tick (1-10 ms). Two writes inside one such granule leave size,
# mtime and ctime as they were, so an unchanged stat signature proves unchanged content only
# for a file whose newest timestamp is older than the start of the scan that read it by more
# than the granule (git's "racy clean" rule): any other file is read again by the next scan.
# A write also stamps the file when it begins, not when its copying ends, so a read of such a
# recent file may overlap a write that stat cannot see: it is confirmed by a second, equal
# read. Measuring each filesystem's granularity would spare only files changed in the last
# two seconds, which are few and small.
RACY_NS = 2_000_000_000
# Reads of a file that changes while it is read, before its previous version is kept instead.
READ_TRIES = 5
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# One int object per permission mode, shared by every entry that has it (0o644 is no small int).
_MODES: dict[int, int] = {}


def _mode(st_mode: int) -> int:
    mode = stat.S_IMODE(st_mode)
    return _MODES.setdefault(mode, mode)


@dataclass
class ScanResult:
    manifest: Manifest
    # chunks read that the store lacks, but those the scan's sink has written (its stream's ``sent``)
    new_chunks: dict[str, bytes] = field(default_factory=dict)
    files_read: int = 0
    # secrets (private keys) read in this scan that go to Consul unencrypted
    plain_secrets: list[str] = field(default_factory=list)
    # files that kept changing while read: their previous version is in the manifest, or none
    unstable: list[str] = field(default_factory=list)
    # the algorithm new chunks were compressed with ("" when none): the record's ``compression``
    compression: str = ""


# A path's cache item: its stat signature (None: never trust it), its entry, and whether its
# timestamps were old enough when it was read for the signature to prove it unchanged; or all
# three packed into a pair (tree/records.Record), as most files of a large tree are. Either
# way its first element is the signature, or starts with it.
_Item = tuple[bytes | None, Entry, bool] | records.Record


def _is_dir(item: _Item | None) -> bool:
    return item is not None and len(item) == 3 and item[1].type == DIR


class Scanner:
    """Turns the tree under ``root`` into a Manifest, remembering what it has read.

    ``previous``, when given, returns the manifest of the last snapshot (called only when
    needed): a file that keeps changing while it is read keeps its version from there.
    """

    def __init__(self, root: Path, path_filter: PathFilter, chunk_size: int, sealing: Sealing | None = None,
                 previous: Callable[[], Manifest | None] | None = None, compression: str = codec.DEFAULT):
        self.root = Path(root)
        self._root_str = str(self.root)
        self.filter = path_filter
        self.chunk_size = chunk_size
        self.sealing = sealing
        self.previous = previous
        self.compression = compression
        self._entries: dict[str, _Item] = {}
        self._sink: Callable[[str, bytes], None] | None = None
        self._written: Callable[[str], bool] | None = None
        self._progress: Callable[[int], None] | None = None
        self._in_flight: deque[str] = deque()
        self._start = 0
        self._previous: dict[str, Entry] | None = None
        self._links: dict[str, tuple[_Item, str, Entry]] = {}
        self._owners = records.Owners()

    def forget(self) -> None:
        """Drop the stat cache so the next scan reads every file again."""
        self._entries.clear()
        self._links.clear()

    def scan(self, known: Container[str], dirty: Iterable[str] | None = None,
             sink: Callable[[str, bytes], None] | None = None, written: Callable[[str], bool] | None = None,
             progress: Callable[[int], None] | None = None) -> ScanResult:
        """Scan the whole tree, or only the ``dirty`` root-relative paths and their subtrees.

        ``known`` holds chunk digests already in the store; other chunks read are returned
        in ``new_chunks``, and each is also passed to ``sink(digest, chunk)`` as soon as it is
        read (once), so that uploading can overlap the reading; once ``written(digest)`` says
        the sink wrote one, it leaves ``new_chunks``. Raises OSError, naming the
        whole path, when the root or a path below it cannot be read, and whatever ``sink`` raises.
        ``progress(size)`` is called after each file read, with its size."""
        result = ScanResult(Manifest(), compression="" if self.compression == "none" else self.compression)
        self._sink, self._written, self._in_flight, self._progress = sink, written, deque(), progress
        self._start = time.time_ns()
        self._previous = None
        root_fd = os.open(self._root_str, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            root_st = os.fstat(root_fd)
            if dirty is None:
                fresh: dict[str, _Item] = {}
                self._walk(root_fd, "", fresh, known, result)
                self._entries = fresh
            else:
                for rel in sorted(set(dirty)):
                    self._rescan(root_fd, rel, known, result)
        finally:
            os.close(root_fd)
            self._sink = self._written = self._progress = None
            self._previous = None
        entries = self._assemble()
        result.manifest = Manifest(entries, self._root(root_st), entries.tokens)
        return result

    @staticmethod
    def _root(st: os.stat_result) -> Entry:
        return Entry(".", DIR, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
                     user=user_name(st.st_uid), group=group_name(st.st_gid))

    def _entry(self, rel: str, item: _Item) -> Entry:
        return records.unpack(rel, item, self._owners) if len(item) == 2 else item[1]

    def _item(self, sig: bytes, entry: Entry, settled: bool) -> _Item:
        """The cache item of a file read: packed into a record when one holds it exactly."""
        packed = records.pack(sig, settled, entry, self._owners) if records.packable(entry) else None
        return packed if packed is not None else (sig, entry, settled)

    def _built(self, rel: str, token: object) -> Entry:
        return token if isinstance(token, Entry) else self._entry(rel, token)  # type: ignore[arg-type]

    def _assemble(self) -> Entries:
        """The cached entries in path order, each further path of a hard-linked file (same
        device and inode, read with the same content and metadata) as a link to the first,
        built when asked for from an object that stays the same while its entry does
        (``Manifest.tokens``). Records and owners never change once made: they stay valid."""
        groups: dict[tuple[int, int], list[str]] = {}
        for rel, item in self._entries.items():
            sig = item[0]
            if sig is not None and linked_file(sig):
                groups.setdefault(file_id(sig), []).append(rel)
        targets: dict[str, str] = {}
        for paths in groups.values():
            if len(paths) > 1:
                paths.sort(key=tree_order)  # the first a restore writes
                first = self._entry(paths[0], self._entries[paths[0]])
                for rel in paths[1:]:
                    e = self._entry(rel, self._entries[rel])
                    if e.same_content(first) and e.same_metadata(first) and e.sealed == first.sealed:
                        targets[rel] = first.path
        links: dict[str, tuple[_Item, str, Entry]] = {}

        def token(rel: str) -> object:
            item = self._entries[rel]
            if rel not in targets:
                return item
            cached = self._links.get(rel)
            if cached is None or cached[0] is not item or cached[1] != targets[rel]:
                cached = (item, targets[rel], dataclasses.replace(self._entry(rel, item), link=targets[rel]))
            links[rel] = cached
            return cached[2]

        keys = sorted(self._entries)  # the keys alone: no pair per path
        tokens = tuple(token(rel) for rel in keys)  # from a generator, not a list copied
        self._links = links
        return Entries(keys, tokens, self._built, records.tally(tokens), lambda: records.chunk_refs(tokens))

    def _wanted(self, rel: str, is_dir: bool, ancestors: bool = True) -> bool:
        return not rel.startswith(INTERNAL_PREFIX) and self.filter.wanted(rel, is_dir, ancestors)

    def _unreadable(self, exc: OSError, rel: str) -> OSError:
        # The OS saw one name relative to a descriptor: name the whole path instead.
        return OSError(exc.errno, exc.strerror, f"{self._root_str}/{rel}" if rel else self._root_str)

    def _rescan(self, root_fd: int, rel: str, known: Container[str], result: ScanResult) -> None:
        """Refresh one path. A directory seen before (same inode) refreshes only itself:
        its children carry their own events. A new or replaced directory is walked."""
        if not rel or rel.startswith(INTERNAL_PREFIX):
            return
        parent, _, name = rel.rpartition("/")
        pfd = -1
        st = None
        try:
            if not parent or _is_dir(self._entries.get(parent)):
                try:
                    pfd = open_below(root_fd, parent)
                    st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                except OSError as exc:
                    if exc.errno not in GONE:
                        raise self._unreadable(exc, rel) from None
            if st is not None and not self._wanted(rel, stat.S_ISDIR(st.st_mode)):
                st = None
            if st is None:
                self._drop(rel)
                return
            cached = self._entries.get(rel)
            known_dir = (_is_dir(cached) and stat.S_ISDIR(st.st_mode)
                         and cached[0] is not None and inode(cached[0]) == st.st_ino)
            fresh: dict[str, _Item] = {}
            if self._add(rel, name, pfd, st, fresh, known, result) and stat.S_ISDIR(st.st_mode) and not known_dir:
                try:
                    fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
                except OSError as exc:
                    if exc.errno not in GONE:
                        raise self._unreadable(exc, rel) from None
                    fresh.pop(rel, None)
                else:
                    try:
                        self._walk(fd, rel, fresh, known, result)
                    finally:
                        os.close(fd)
            if not known_dir:
                self._drop(rel)
            self._entries.update(fresh)
        finally:
            if pfd not in (-1, root_fd):
                os.close(pfd)

    def _drop(self, rel: str) -> None:
        below = rel + "/"
        for key in [k for k in self._entries if k == rel or k.startswith(below)]:
            del self._entries[key]

    def _walk(self, fd: int, rel_dir: str, into: dict, known: Container[str], result: ScanResult) -> None:
        """Add everything below the directory open as ``fd`` (``rel_dir``), depth first and
        without recursion: each directory's own names first, then its subdirectories."""
        chain = DirChain(fd, rel_dir)
        pending = [self._list(fd, rel_dir, into, known, result)]
        try:
            while pending:
                names = pending[-1]
                if not names:
                    pending.pop()
                    if pending:
                        try:
                            chain.leave()
                        except OSError as exc:
                            raise self._unreadable(exc, chain.rel) from None
                    continue
                name = names.pop()
                rel = f"{chain.rel}/{name}" if chain.rel else name
                try:
                    sub = chain.enter(name, rel)
                except OSError as exc:
                    if exc.errno not in GONE:
                        raise self._unreadable(exc, rel) from None
                    into.pop(rel, None)  # replaced or removed since it was listed
                    continue
                pending.append(self._list(sub, rel, into, known, result))
        finally:
            chain.close()

    def _list(self, fd: int, rel_dir: str, into: dict, known: Container[str], result: ScanResult) -> list[str]:
        """Add the wanted names of the directory open as ``fd``; return its subdirectories to
        walk, last first."""
        # Names, not scandir's entries: an entry keeps the stat it made, and a directory of
        # 250,000 API objects then held them all at once (about 500 bytes a file).
        try:
            names = sorted(os.listdir(fd))
        except OSError as exc:
            raise self._unreadable(exc, rel_dir) from None
        subdirs = []
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._unreadable(exc, rel) from None
            is_dir = stat.S_ISDIR(st.st_mode)
            if not self._wanted(rel, is_dir, ancestors=False):
                continue
            if self._add(rel, name, fd, st, into, known, result) and is_dir:
                subdirs.append(name)
        subdirs.reverse()
        return subdirs

    def _add(self, rel: str, name: str, dir_fd: int, st: os.stat_result, into: dict,
             known: Container[str], result: ScanResult) -> bool:
        sig = signature(st)
        cached = self._entries.get(rel)
        if cached is not None and not stat.S_ISDIR(st.st_mode) and (
                records.same_signature(cached, sig) and records.settled(cached) if len(cached) == 2
                else cached[0] == sig and cached[2]):
            into[rel] = cached
            return True
        common = dict(path=rel, mode=_mode(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                      mtime_ns=st.st_mtime_ns, user=user_name(st.st_uid), group=group_name(st.st_gid))
        if stat.S_ISDIR(st.st_mode):
            entry = Entry(type=DIR, **common)
        elif stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINVAL):  # gone, or no longer a link
                    return False
                raise self._unreadable(exc, rel) from None
            entry = Entry(type=SYMLINK, target=target, **common)
        elif stat.S_ISREG(st.st_mode):
            item = self._read_file(rel, name, dir_fd, st, common, known, result)
            if item is None:
                return False
            into[rel] = item
            return True
        else:
            log.info("skipping special file", path=rel)
            return False
        into[rel] = (sig, entry, max(st.st_mtime_ns, st.st_ctime_ns) < self._start - RACY_NS)
        return True

    def _read_file(self, rel: str, name: str, dir_fd: int, st: os.stat_result, common: dict,
                   known: Container[str], result: ScanResult) -> _Item | None:
        """Read a file such that no write overlapped the read: the same size, mtime and ctime
        before and after it, and for a file stamped too recently for that to prove it
        (``RACY_NS``), writes in progress awaited and a second read with the same digest. After
        ``READ_TRIES`` reads its previous version is kept. None: the file is gone, or new and
        never read whole. The file streams through a chunk at a time, never whole in memory."""
        before = st
        # The digest of a first read of a recently stamped file: only a read that can be the one
        # kept stores chunks, so a recent file's first read hashes and stores nothing.
        confirm: str | None = None
        for attempt in range(READ_TRIES):
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in GONE:  # removed, or replaced by a symlink, since it was listed
                    return None
                raise self._unreadable(exc, rel) from None
            try:
                if attempt:
                    before = os.fstat(fd)
                settled = max(before.st_mtime_ns, before.st_ctime_ns) < self._start - RACY_NS
                if not settled:
                    await_writes(fd)
                read = self._read_pass(fd, rel, known, result, store=settled or confirm is not None)
                after = os.fstat(fd)
            except OSError as exc:
                raise self._unreadable(exc, rel) from None
            finally:
                os.close(fd)
            if not same_read(before, after) or read.size != after.st_size:
                confirm = None
                if attempt < READ_TRIES - 1:
                    time.sleep(0.005 * 2 ** attempt)  # let the writer finish
                continue
            if settled or read.digest == confirm:
                break
            confirm = read.digest
        else:
            return self._keep_previous(rel, result)
        result.files_read += 1
        if self._progress is not None:
            self._progress(read.size)
        if read.plain_secret:
            result.plain_secrets.append(rel)
        common.update(mode=_mode(after.st_mode), mtime_ns=after.st_mtime_ns)
        entry = Entry(type=FILE, size=read.size, sha256=read.digest, chunks=read.chunks, sealed=read.sealed, **common)
        return self._item(signature(after), entry, settled)

    def _read_pass(self, fd: int, rel: str, known: Container[str], result: ScanResult,
                   store: bool) -> chunking.Read:
        """Read the open file once, a chunk at a time; with ``store``, put the chunks the store
        lacks into ``result.new_chunks`` and hand each to the sink as soon as it is read."""
        sealing = self.sealing
        sealed = plain_secret = False
        if sealing is not None:  # what tells a secret lies in its first MiB (looks_like_private_key)
            head = os.pread(fd, 1 << 20, 0)
            sealed = sealing.wants(rel, head)
            # Before any piece reaches the sink: a refused secret must leave nothing of itself in Consul.
            plain_secret = not sealed and sealing.check_plain(rel, head)
        name = sealing.sealer.address if sealed else chunking.sha256
        read = chunking.Read(sealing.sealer.hasher() if sealed else None, sealed, plain_secret)
        for piece in chunking.pieces(lambda offset, n: os.pread(fd, n, offset), self.chunk_size):
            d = read.add(piece, name(piece))
            if store and d not in known and d not in result.new_chunks and not (self._written and self._written(d)):
                result.new_chunks[d] = self._stored(d, piece, sealed)
                if self._sink is not None:
                    self._sink(d, result.new_chunks[d])
                    self._handed(d, result)
        return read.end()

    def _handed(self, digest: str, result: ScanResult) -> None:
        """Forget the chunks the sink wrote, which its ``sent`` holds: only those in flight (a few
        transactions) stay. A table place and a size per chunk beside that set cost a first
        commit of 300,000 files about 25 MB."""
        self._in_flight.append(digest)
        while self._written is not None and self._in_flight and self._written(self._in_flight[0]):
            del result.new_chunks[self._in_flight.popleft()]

    def _stored(self, address: str, piece: bytes, sealed: bool) -> bytes:
        """A chunk as Consul keeps it: compressed first (ciphertext does not compress), then sealed."""
        stored = codec.encode(piece, self.compression)
        return self.sealing.sealer.seal(self.sealing.node, address, stored) if sealed else stored

    def _keep_previous(self, rel: str, result: ScanResult) -> _Item | None:
        """The item of a file never read whole: its entry from the last scan or the last
        snapshot, never trusted by the next scan; None when it has none."""
        result.unstable.append(rel)
        cached = self._entries.get(rel)
        entry = self._entry(rel, cached) if cached is not None else None
        entry = entry if entry is not None and entry.type == FILE else None
        if entry is None and self.previous is not None:
            if self._previous is None:
                manifest = self.previous()
                self._previous = manifest.by_path() if manifest is not None else {}
            entry = self._previous.get(rel)
            if entry is not None and entry.type != FILE:
                entry = None
        if entry is None:
            log.warning("file kept changing while it was read; left out of this snapshot", path=rel, reads=READ_TRIES)
            return None
        log.warning("file kept changing while it was read; keeping its previous version", path=rel,
                    reads=READ_TRIES)
        # Its hard link, if it was one, is decided again among this scan's files.
        return None, (dataclasses.replace(entry, link="") if entry.link else entry), False
