"""``statesync snapshots``: a node's snapshots, oldest first in commit order, and which are pinned."""
from __future__ import annotations

import argparse
import json

from .. import config
from ..errors import EXIT_OK
from ..repo import prune
from ..sidecar.wiring import open_repo
from ..snapshot.names import escape


def cmd_snapshots(cfg: config.Config, args: argparse.Namespace) -> int:
    records, pins = _rows(open_repo(cfg))
    if args.json:
        print(json.dumps([{**r.summary(), "pinned": r.id in pins, "ca_spki_sha256": r.ca} for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"no snapshots for node {cfg.node} under {cfg.prefix}")
        return EXIT_OK
    print(f"{'ID':<32} {'CREATED':<30} {'FILES':>7} {'BYTES':>12}  PINNED")
    for r in records:
        # Ids and times come from records in Consul, where anyone who may write the prefix chose them.
        print(f"{escape(r.id):<32} {escape(r.created):<30} {r.files:>7} {r.bytes:>12}  "
              f"{'pinned' if r.id in pins else ''}".rstrip())
    return EXIT_OK


def _rows(repo) -> tuple[list, set[str]]:
    """The records (oldest first in commit order) and the pinned ids among them."""
    head = repo.head().record
    return repo.records(head.id if head else ""), set(prune.read_pins(repo.store, repo.layout)[0])
