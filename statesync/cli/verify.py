"""``statesync verify``: fetch and check every chunk a snapshot needs (its --json schema: docs/JSON.md)."""
from __future__ import annotations

import argparse
import json

from .. import config
from ..errors import EXIT_FAILURE, EXIT_OK, NotFound
from ..repo.verify import verify
from ..sidecar.wiring import open_repo
from ..snapshot.names import bytes_b64, escape, for_json


def cmd_verify(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    if args.all:
        records = repo.records()
        head = repo.head().record
        if head is not None and head.id not in {r.id for r in records}:
            records.append(head)
        if not records:
            raise NotFound(f"node {cfg.node!r} has no snapshot under {repo.layout.node_root}")
    else:
        records = [repo.record(args.snapshot)]
    report = verify(repo, records)
    if args.json:
        print(json.dumps({"node": cfg.node, "snapshots": report.snapshots, "chunks": report.chunks,
                          "bytes": report.bytes, "whole": report.whole,
                          "damaged": [{"snapshot": d.snapshot, "path": for_json(d.path),
                                       "path_bytes_b64": bytes_b64(d.path), "reason": for_json(d.reason),
                                       "chunk": d.chunk or None} for d in report.damage]}, indent=2))
        return EXIT_OK if report.whole else EXIT_FAILURE
    for d in report.damage:
        print(f"damaged  {escape(d.snapshot)}  {escape(d.path)}: {escape(d.reason)}"
              + (f" ({escape(d.chunk[:16])}…)" if d.chunk else ""))
    which = ", ".join(report.snapshots) if len(report.snapshots) <= 3 else f"{len(report.snapshots)} snapshots"
    if report.whole:
        print(f"whole: {which} of node {cfg.node}: {report.chunks} chunks, {report.bytes} bytes checked")
        return EXIT_OK
    paths = len({(d.snapshot, d.path) for d in report.damage})
    print(f"damaged: {which} of node {cfg.node}: {paths} damaged path(s); {report.chunks} chunks checked")
    return EXIT_FAILURE
