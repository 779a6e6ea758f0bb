"""``statesync gc``: collect the chunks no kept snapshot references, when no sidecar holds the writer lock."""
from __future__ import annotations

import argparse

from .. import config
from ..consul.lock import describe_holder, holding_writer_lock
from ..errors import EXIT_OK, LockHeld
from ..sidecar.wiring import open_repo


def cmd_gc(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    if cfg.lock.enabled:
        pair = repo.store.get(repo.layout.lock, consistent=True)
        if pair is not None and pair.session:
            raise LockHeld(f"the writer lock of node {cfg.node!r} is held by {describe_holder(pair.value)}: "
                           "the sidecar collects garbage itself; stop it to run gc by hand")
    with holding_writer_lock(repo.store, repo.layout.lock, cfg.lock, cfg.node, "gc") as fence:
        count = repo.collect_garbage(cfg.gc_grace, fence=fence)
    print(f"collected {count} unreferenced chunk(s) of node {cfg.node}; chunks unreferenced for less than "
          f"gc_grace ({cfg.gc_grace:g}s) wait for a later collection")
    return EXIT_OK
