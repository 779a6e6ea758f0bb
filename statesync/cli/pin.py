"""``statesync pin`` and ``unpin``: keep a snapshot from every retention rule, or stop keeping it."""
from __future__ import annotations

import argparse

from .. import config
from ..errors import EXIT_OK
from ..repo import prune
from ..sidecar.wiring import open_repo


def cmd_pin(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    changed = prune.set_pin(repo.store, repo.layout, args.snapshot, True)
    print(f"snapshot {args.snapshot} of node {cfg.node} {'pinned' if changed else 'was pinned already'}: "
          f"no retention rule removes it")
    return EXIT_OK


def cmd_unpin(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    changed = prune.set_pin(repo.store, repo.layout, args.snapshot, False)
    print(f"snapshot {args.snapshot} of node {cfg.node} {'unpinned' if changed else 'was not pinned'}")
    return EXIT_OK
