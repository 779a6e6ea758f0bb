"""What a manifest may hold: the one place of the bounds its decoder enforces. Pure.

Whoever holds a node's write token can store any manifest, and a restore must then either
refuse it with one line or restore within its 256 MB. Every bound is generous against real
trees (a 300,000-file tree, a 374 MB state file, chunk size down to 4 KiB) and tight against
what only a forged manifest does: deflate's 1000:1 on repeated text, millions of chunk
references, millions of tiny entries. docs/FORMAT.md ("Manifest limits") lists them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from .chunking import MIN_CHUNK_SIZE

# The compressed manifest a reader fetches (a 300,000-file tree: 13 MB).
MAX_STORED_BYTES = 64 << 20
# Its JSON text (300,000 files: 62 MB). Parsing time is bounded by this, memory by the rest.
MAX_INFLATED_BYTES = 256 << 20
# No bound on how much the text inflates relative to the stored bytes: deflate tops out at
# about 1000:1, and real trees get near it (50,000 empty files under a 2,000-byte directory
# path inflate 320 times; 100,000 under a short one, 66), so only the bounds here and below
# tell a hostile manifest from a large one.
# The JSON text of one entry, or of any other member of the document. Parsed whole, it may
# become up to 24 times as many bytes of objects ("[{},{},...]") for a moment: 1 MiB keeps
# that near 25 MB. It holds a path of up to 1 MiB, or a file of 15,000 chunks (5 GB at the
# default chunk size of 352 KiB; a 374 MB state file has 1,038).
MAX_VALUE_CHARS = 1 << 20
MAX_ENTRIES = 1_000_000
# Chunk references of all files together (a 374 MB file at the default 352 KiB: 1,038).
MAX_CHUNK_REFS = 4_000_000
# What a restore may take: the whole process, at its peak (resident set). Of it, the
# interpreter with statesync's modules, the Consul client and a fetch batch take about
# 50 MiB whatever the manifest (BASE); the rest is the entries' (``entry_memory``), and for a
# moment one member's text parsed whole, up to 25 MiB (PARSE), while the decoder reads (never
# while entries are sorted). docs/FORMAT.md has the estimate against measured peaks: a tree
# of 300,000 small files is estimated at 186 MiB and peaks at 206 MiB, BASE included.
MAX_MEMORY = 256 << 20
BASE = 64 << 20
PARSE = 25 << 20
MAX_ENTRY_MEMORY = MAX_MEMORY - BASE
# What a restore keeps per entry beyond the objects it holds (each counted with the allocator's
# rounding to 16 bytes): its place in the decoder's list and in the manifest's tuple (both for a moment).
PER_ENTRY = 16
# What a sort into tree order adds per entry beyond the copy of its path it makes as its key:
# the key's place and the entry's in the sorted list.
PER_KEY = 24
# A place in the decoder's table of distinct values (it holds each owner, mode and digest
# once), its growth included. The table is gone before anything is sorted.
PER_VALUE = 100
# The most values the table holds: it is emptied when full (the values met again come back at
# once), so that it costs no place per file in a tree whose files each have a digest of their own.
MAX_VALUES = 4096


def max_chunks(size: int) -> int:
    """The most chunks a file of ``size`` bytes can have: each but its last holds at least
    the smallest chunk size a writer may be set to."""
    return -(-size // MIN_CHUNK_SIZE)


def entry_memory(entry: object, own: tuple[object, ...], path: str, new: tuple[object, ...]) -> tuple[int, int, int]:
    """What an entry costs a restore, as (kept, sort, table): the bytes it holds for the whole
    restore (the object, the values it holds alone, ``own``, and the ``new`` values the decoder
    has not met before: later entries share them), those a sort into tree order adds for a
    moment (a copy of ``path`` as its key), and those the decoder's table of distinct values
    adds while it reads."""
    kept = _size(entry) + sum(map(_size, own)) + sum(map(_size, new)) + PER_ENTRY
    return kept, sys.getsizeof(path) + PER_KEY, len(new) * PER_VALUE


def _size(o: object) -> int:
    # Empty strings and tuples, and small integers, are one object shared by everyone. The
    # allocator hands out multiples of 16 bytes (a digest's 113 take 128).
    if not o or (type(o) is int and -5 <= o <= 256):
        return 0
    return (sys.getsizeof(o) + 15) & ~15


@dataclass
class Tally:
    """How much of a manifest has been read so far."""

    stored: int = 0
    inflated: int = 0
    entries: int = 0
    chunk_refs: int = 0
    memory: int = 0  # what the entries cost a restore at its peak, beyond BASE
    kept: int = 0
    sort: int = 0
    table: int = 0  # the decoder's table of values now (at most MAX_VALUES places)
    # Whether the entries need a sort into tree order: those that come in it are never sorted
    # (``manifest.tree_ordered``), and then a sort's keys cost nothing.
    needs_sort: bool = True

    def add(self, kept: int, sort: int, table: int, needs_sort: bool = True) -> None:
        """Count an entry's ``entry_memory``. A restore holds what entries keep, and either
        (decoding) the table of values and a member's text parsed, or (later) a sort's keys."""
        self.kept, self.sort, self.table = self.kept + kept, self.sort + sort, self.table + table
        self.needs_sort = needs_sort
        self.memory = self.kept + max(self.sort if needs_sort else 0, self.table + PARSE)

    def excess(self) -> str | None:
        """Why a manifest that has come this far is refused; None while it is within every bound."""
        if self.stored > MAX_STORED_BYTES:
            return f"is larger than {MAX_STORED_BYTES >> 20} MiB"
        if self.inflated > MAX_INFLATED_BYTES:
            return f"inflates beyond {MAX_INFLATED_BYTES >> 20} MiB"
        if self.entries > MAX_ENTRIES:
            return f"has more than {MAX_ENTRIES} entries"
        if self.chunk_refs > MAX_CHUNK_REFS:
            return f"references more than {MAX_CHUNK_REFS} chunks"
        if self.memory > MAX_ENTRY_MEMORY:
            return f"would take more than {MAX_MEMORY >> 20} MiB of memory to restore"
        return None
