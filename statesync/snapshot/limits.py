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
# that near 25 MB. It holds a path of up to 1 MiB, or a file of 15,000 chunks (4 GB at the
# default chunk size; a 374 MB state file has 1,427).
MAX_VALUE_CHARS = 1 << 20
MAX_ENTRIES = 1_000_000
# Chunk references of all files together (a 374 MB file at the default 256 KiB: 1,427).
MAX_CHUNK_REFS = 4_000_000
# What the decoded entries and a restore's own tables of them may occupy (``entry_memory``,
# which comes within a few percent of what a restore's peak grows by): a tree of 300,000 small
# files is estimated at 235 MiB and restores in a 300 MB process, 200,000 in 204 MB.
MAX_MEMORY = 256 << 20
# What a restore keeps per entry beyond the entry itself and the copy of its path a sort
# into tree order makes (its place in lists of them), per distinct chunk (its expected size,
# its use count) and per chunk reference (its plan).
PER_ENTRY = 80
PER_DIGEST = 200
PER_REF = 8


def max_chunks(size: int) -> int:
    """The most chunks a file of ``size`` bytes can have: each but its last holds at least
    the smallest chunk size a writer may be set to."""
    return -(-size // MIN_CHUNK_SIZE)


def entry_memory(entry: object, own: tuple[object, ...], refs: int, new_values: int) -> int:
    """The bytes an entry costs a restore: the object, the strings, numbers and chunk tuple it
    holds alone (``own``; empty ones are shared), its ``refs`` chunk references, and ``new_values``
    digests (or owners, modes) not met before: the decoder keeps one of equal values, counted
    where it first appears."""
    return (sys.getsizeof(entry) + sum(sys.getsizeof(o) for o in own if o) + PER_ENTRY + refs * PER_REF
            + new_values * (PER_DIGEST + _DIGEST))


_DIGEST = sys.getsizeof("0" * 64)


@dataclass
class Tally:
    """How much of a manifest has been read so far."""

    stored: int = 0
    inflated: int = 0
    entries: int = 0
    chunk_refs: int = 0
    memory: int = 0

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
        if self.memory > MAX_MEMORY:
            return f"would take more than {MAX_MEMORY >> 20} MiB of memory to restore"
        return None
