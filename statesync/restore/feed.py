"""A snapshot's file contents fed to the tree writer (``apply.write_tree``) a chunk at a time,
fetched ahead in batches, each chunk verified, decrypted and decompressed, each file checked whole."""
from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator, Set
from concurrent.futures import Future, ThreadPoolExecutor

from ..consul.settings import READ_BATCH_BYTES
from ..errors import CorruptData
from ..repo.repository import Repo, chunk_size_of
from ..snapshot.manifest import FILE, Entry, Manifest, tree_ordered
from ..snapshot.record import Record

# Chunks fetched at a time at most, whatever their bytes: a batch of tiny files is a few
# hundred kilobytes of chunks and tables instead of tens of megabytes, at the same number
# of Consul transactions (get_many cuts a batch into transactions of its own anyway).
MAX_BATCH_CHUNKS = 4096
# Batches fetched ahead of the one being written, each in a thread of its own (the transport
# gives each its own keep-alive connection): Consul's answer, its JSON and base64, the
# decompression and every chunk's check run while the files of the batch before are hashed
# whole and written, as hashlib, zstandard and the socket let go of the GIL. Memory holds this
# many batches more. Fetching a batch costs about twice the CPU of writing it, hence two. A third
# thread that hashed a file whole beside its writing made the restore at L slower on two cores,
# not faster: the GIL's hand-offs cost more (docs/BENCH.md, "Restore against its real limit").
PREFETCH = 2


class ChunkFeed:
    """A snapshot's file contents a chunk at a time, verified, decrypted and decompressed,
    fetched ahead in batches of about ``batch_bytes`` in the order ``write_tree`` writes the
    files (``order``): memory holds the batch being written and the ``PREFETCH`` being fetched,
    never a whole file, let alone the whole snapshot. Raises CorruptData as soon as a chunk,
    or a file's whole content, fails its check. ``close()`` stops the fetching threads.

    It keeps no table per chunk or per file: the batches are cut off the entries in tree order,
    and a chunk stays cached while the batch that follows looks ahead to it."""

    def __init__(self, repo: Repo, record: Record, manifest: Manifest, batch_bytes: int = READ_BATCH_BYTES,
                 order: tuple[Entry, ...] | list[Entry] | None = None):
        self.repo, self.record, self.batch_bytes = repo, record, batch_bytes
        self.order = tree_ordered(manifest.entries) if order is None else order
        self._chunk_size = record.chunk_size or repo.chunk_size
        self._next = 0  # where in ``order`` the next file asked for is looked for
        self._cache: dict[str, bytes] = {}  # the current batch: every chunk it planned
        self._plans = self._batches(self._refs(self.order, 0))
        self._queue: deque[tuple[Set[str], Future | None]] = deque()  # the batches after it, being fetched
        self._current: Set[str] = frozenset()  # the digests the current batch planned
        self._pool: ThreadPoolExecutor | None = None
        if any(e.sealed for e in self.order if e.type == FILE and not e.link):
            repo._check_key(record.key_id)  # before anything is staged: a missing key is no corruption

    def file_chunks(self, e: Entry) -> Iterator[bytes]:
        # A file of one plain chunk was verified under this very address as the chunk was read.
        whole = None if e.chunks == (e.sha256,) else self.repo.sealer.hasher() if e.sealed else hashlib.sha256()
        at = self._locate(e)
        alone: Iterator[dict[str, bytes]] | None = None  # the batches of a file asked for out of order
        held: dict[str, bytes] = {}
        size = 0
        for j, d in enumerate(e.chunks):
            piece = self._cache.get(d) if at is not None else held.get(d)
            if piece is None and at is not None:
                piece = self._advance(d)
            if piece is None:  # out of order: this file's chunks from here, fetched alone
                if alone is None:
                    alone = (self._fetch(set(sizes), sizes, sealed)
                             for sizes, sealed in self._batches(self._refs((e,), 0, j)))
                held = next(alone)
                piece = held[d]
            if whole is not None:
                whole.update(piece)
            size += len(piece)
            yield piece
        if size != e.size:
            raise CorruptData(f"{e.path}: content is {size} bytes, the manifest says {e.size}")
        if whole is not None and whole.hexdigest() != e.sha256:
            raise CorruptData(f"content {e.sha256[:16]}… fails its sha256 check after joining chunks")

    def close(self) -> None:
        """Stop fetching: what is queued is dropped, a fetch under way ends, its answer unread."""
        for _, future in self._queue:
            if future is not None:
                future.cancel()
        self._queue.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ChunkFeed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _locate(self, e: Entry) -> int | None:
        """The index of ``e`` in ``order``, or None for one asked for out of order, which is
        then fetched alone. Files are asked for in that order: the walk over it is linear."""
        order, i = self.order, self._next
        while i < len(order) and order[i] is not e:
            i += 1
        if i == len(order):
            return None
        self._next = i + 1
        return i

    def _advance(self, d: str) -> bytes | None:
        """Make the next batches current until one holds ``d``; None if none does."""
        while True:
            self._top_up()
            if not self._queue:
                return None
            planned, future = self._queue.popleft()
            fetched = {} if future is None else future.result()
            # What the new batch no longer looks ahead to is dropped: its plan, and no more, is held.
            self._cache = {k: v for k, v in self._cache.items() if k in planned}
            self._cache.update(fetched)
            self._current = planned
            self._top_up()
            if d in self._cache:
                return self._cache[d]

    def _top_up(self) -> None:
        """Start fetching batches until ``PREFETCH`` are under way beyond the current one; each
        fetches what the batch before it does not hold, which it carries over."""
        while len(self._queue) < PREFETCH:
            plan = next(self._plans, None)
            if plan is None:
                return
            sizes, sealed = plan
            before = self._queue[-1][0] if self._queue else self._current
            wanted = sizes.keys() - before
            if self._pool is None:
                self._pool = ThreadPoolExecutor(PREFETCH, thread_name_prefix="statesync-fetch")
            future = self._pool.submit(self._fetch, wanted, sizes, sealed) if wanted else None
            self._queue.append((sizes.keys(), future))

    def _fetch(self, wanted: Set[str], sizes: dict[str, int], sealed: set[str]) -> dict[str, bytes]:
        return self.repo.fetch_chunks(wanted - sealed, sealed & wanted, self.record.key_id, sizes)

    def _refs(self, order: tuple[Entry, ...] | list[Entry], at: int, j: int = 0) -> Iterator[tuple[str, int, bool]]:
        """Each chunk reference from chunk ``j`` of ``order[at]`` on, in the order they will be
        asked for: its digest, the size it is expected to have (sealed ones a little more), and
        whether it is sealed."""
        for i in range(at, len(order)):
            f = order[i]
            if f.type != FILE or f.link:
                continue
            for k in range(j if i == at else 0, len(f.chunks)):
                yield f.chunks[k], chunk_size_of(f, k, self._chunk_size), f.sealed

    def _batches(self, refs: Iterator[tuple[str, int, bool]]) -> Iterator[tuple[dict[str, int], set[str]]]:
        """``refs`` cut into batches of about ``batch_bytes`` and at most ``MAX_BATCH_CHUNKS``
        chunks: each the size to expect of every chunk it plans, and which of them are sealed."""
        sizes: dict[str, int] = {}
        sealed: set[str] = set()
        size = 0
        for d, expected, is_sealed in refs:
            if sizes and (size >= self.batch_bytes or len(sizes) >= MAX_BATCH_CHUNKS):
                yield sizes, sealed
                sizes, sealed, size = {}, set(), 0
            if d not in sizes:
                size += expected
            sizes[d] = max(expected, sizes.get(d, 0))
            if is_sealed:
                sealed.add(d)
        if sizes:
            yield sizes, sealed
