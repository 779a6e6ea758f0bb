"""``statesync nodes``: every node under the prefix, its role, head and CA (its --json schema: docs/JSON.md)."""
from __future__ import annotations

import argparse
import json

from .. import config
from ..errors import EXIT_OK
from ..repo.nodes import nodes
from ..sidecar.wiring import open_repo
from ..snapshot.names import escape


def cmd_nodes(cfg: config.Config, args: argparse.Namespace) -> int:
    found = nodes(open_repo(cfg).store, cfg.layout)
    if args.json:
        print(json.dumps([{"node": n.name, "role": n.role or None, "head": n.head.id if n.head else None,
                           "head_time": n.head.created if n.head else None,
                           "files": n.head.files if n.head else None, "bytes": n.head.bytes if n.head else None,
                           "snapshots": n.snapshots, "ca_spki_sha256": (n.head.ca or None) if n.head else None,
                           "problem": n.problem or None} for n in found], indent=2))
        return EXIT_OK
    if not found:
        print(f"no node has snapshots under {escape(cfg.prefix)}")
        return EXIT_OK
    print(f"{'NODE':<24} {'ROLE':<10} {'HEAD TIME':<30} {'FILES':>7} {'BYTES':>12} {'SNAPS':>5}  CA (SPKI SHA-256)")
    for n in found:
        # Names and times come from Consul, where anyone who may write the prefix chose them.
        name, role = escape(n.name), escape(n.role or "-")
        if n.head is None:
            print(f"{name:<24} {role:<10} {'-':<30} {'-':>7} {'-':>12} {n.snapshots:>5}  {escape(n.problem)}")
            continue
        h = n.head
        print(f"{name:<24} {role:<10} {escape(h.created):<30} {h.files:>7} {h.bytes:>12} {n.snapshots:>5}  "
              f"{escape(h.ca or '-')}")
    return EXIT_OK
