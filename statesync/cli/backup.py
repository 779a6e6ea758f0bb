"""``statesync backup``: snapshot --root once and commit it."""
from __future__ import annotations

import argparse
import contextlib
import sys
import time

from .. import config
from ..consul.store import retry
from ..errors import EXIT_OK, StatesyncError, UnreadablePath
from ..repo.refsets import Known
from ..sidecar.wiring import open_repo
from ..snapshot.names import escape
from .progress import Progress, aborting


@contextlib.contextmanager
def _reading(root):
    """Name the file that could not be read below ``root``, in one line."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise
        raise UnreadablePath.from_os_error(exc, root) from None


def cmd_backup(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..repo import backup
    from ..restore.apply import recover
    from ..restore.rootlock import hold_root
    from ..tree.scan import Scanner
    # What backup reports as its time: the whole of it. The commit's own time (CommitResult.seconds)
    # leaves out the scan and the upload that overlaps it, most of a backup.
    started = time.monotonic()
    if not cfg.root.is_dir():
        raise StatesyncError(f"root: {cfg.root} is not a directory")
    with hold_root(cfg.root, "backup"):
        recover(cfg.root)  # never snapshot a tree that a killed restore left half swapped
        repo = open_repo(cfg)
        head = retry(repo.checked_head)  # each failed attempt is a warning on stderr, none is silent
        known = Known(repo.refs(head.record)) if head.record else Known()
        # The last snapshot's size is the estimate of this one's (none: counts and rate, no ETA).
        bar = Progress(sys.stderr, head.record.files if head.record else 0, head.record.bytes if head.record else 0,
                       "backup", started=started)
        # A file that keeps changing while read keeps its version from the head (stderr says so).
        previous = (lambda: repo.manifest(head.record)) if head.record else None
        scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size, cfg.sealing, previous=previous,
                          compression=cfg.compression)
        with aborting(bar), _reading(cfg.root):
            res = backup.run(repo, scanner, head, known, roots=cfg.roots, root=cfg.root, meta={"command": "backup"},
                             max_drop=1.0 if args.allow_drop else cfg.max_drop, progress=bar.file_done).commit
    bar.close()
    if res is None:
        print(f"unchanged: snapshot {escape(head.record.id)} already holds this tree")
        return EXIT_OK
    r = res.record
    print(f"snapshot {r.id}: {r.files} files, {r.bytes} bytes, {res.chunks_written} chunks written, "
          f"{res.chunks_reused} reused, {res.kv_writes} KV writes, {bar.elapsed:.2f}s")
    return EXIT_OK
