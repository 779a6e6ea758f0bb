"""One backup: scan the tree, stream its new chunks up while it reads, commit. The one pipeline
of `statesync backup` and of the daemon's every sync.

What differs between them is input, not a second copy: the daemon passes the paths it saw
change (``dirty``; None rescans the whole tree, each unchanged file kept from the scanner's
cache without reading it), the chunks a failed attempt read and still owes Consul
(``carried``, kept up to date here) and a hook that holds back paced files before the commit.

Streaming (``stream``) sends full transactions of chunks while the scan is still reading, so
a large tree never sits in memory whole; a chunk it sent leaves the result, and only the
stream's ``sent`` names it. Such a chunk cannot be carried to the next attempt when this one
fails: the scanner then forgets what it read, and the next scan reads those files again.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from ..consul.client import Op
from ..errors import CasConflict, LockLost, RootMissing, StoreError
from ..tree.roots import require as require_roots
from ..tree.scan import Scanner, ScanResult
from .refsets import Known
from .repository import CommitResult, Head, MissingChunks, Repo

log = structlog.get_logger(__name__)


@dataclass
class Outcome:
    scan: ScanResult
    # None: the tree equals the head's snapshot, and nothing was written
    commit: CommitResult | None


def warn_plain_secrets(paths: list[str]) -> None:
    """Say loudly that private keys go to Consul unencrypted."""
    if paths:
        log.warning("PRIVATE KEYS WILL BE STORED IN CONSUL IN PLAIN TEXT: configure encryption_key_file "
                    "(statesync keygen) to encrypt them", files=sorted(paths)[:20], count=len(paths))


def run(repo: Repo, scanner: Scanner, head: Head, known: Known | set[str], *, roots: tuple[tuple[str, str], ...],
        root: Path, meta: dict, fence: tuple[Op, ...] = (), max_drop: float = 1.0,
        dirty: Iterable[str] | None = None, stream: bool = True, carried: dict[str, bytes] | None = None,
        before_commit: Callable[[ScanResult], None] | None = None,
        progress: Callable[[int], None] | None = None) -> Outcome:
    """Scan (the whole tree, or only ``dirty``), then commit on top of ``head`` (``Repo.commit``:
    ``known`` becomes the new head's chunks). A full scan warns of secrets going up in plain text.
    A scan that lacks a named root of ``roots`` commits nothing (RootMissing).

    ``carried`` chunks join the scan's new ones; when the commit fails for a named root or for
    Consul, it is set to the chunks this attempt read and its manifest needs, and emptied when
    the commit succeeds. ``before_commit(result)`` may change the result the commit takes.
    Raises what the scan and ``Repo.commit`` raise, OSError naming the path among them."""
    carried = {} if carried is None else carried
    chunks = repo.chunk_stream(fence) if stream else contextlib.nullcontext()
    with chunks:
        result = scanner.scan(known, dirty, sink=chunks.add if stream else None,
                              written=chunks.written if stream else None, progress=progress)
    if dirty is None:
        warn_plain_secrets(result.plain_secrets)
    if carried:
        result.new_chunks = {**carried, **result.new_chunks}
    try:
        require_roots(result.manifest, roots, root)
        if before_commit is not None:
            before_commit(result)
        res = repo.commit(result, head, known, meta=meta, fence=fence, sent=chunks.sent if stream else frozenset(),
                          sent_bytes=chunks.sent_bytes if stream else 0, max_drop=max_drop)
    except (LockLost, MissingChunks, CasConflict):
        raise  # the caller starts over from Consul's head: nothing read here is worth keeping
    except (RootMissing, StoreError):
        _carry(result, scanner, carried, chunks.sent if stream else frozenset())
        raise
    carried.clear()
    return Outcome(result, res)


def _carry(result: ScanResult, scanner: Scanner, carried: dict[str, bytes], sent: Container[str]) -> None:
    """Keep the chunks read for a commit that failed: the scanner will not read their files
    again while they stay unchanged, and no commit has stored them yet."""
    needed = result.manifest.chunk_refs()
    keep = {d: p for d, p in result.new_chunks.items() if d in needed}
    carried.clear()
    if any(d in needed and d not in keep for d in sent):
        # Their bytes are gone, and Consul may collect what no snapshot references.
        scanner.forget()
        return
    carried.update(keep)
