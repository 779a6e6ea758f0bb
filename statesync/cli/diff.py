"""``statesync diff``: --root against a snapshot, with diff(1)'s exit codes."""
from __future__ import annotations

import argparse
import json

from .. import config
from ..errors import EXIT_DIFFERENT, EXIT_SAME, StatesyncError
from ..sidecar.wiring import open_repo
from ..snapshot.names import bytes_b64, escape, for_json


def cmd_diff(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..restore.local_manifest import local_manifest
    from ..snapshot.diffing import diff
    if not cfg.root.is_dir():
        raise StatesyncError(f"root: {cfg.root} is not a directory")
    repo = open_repo(cfg)
    record = repo.record(args.snapshot)
    snap = repo.manifest(record)
    d = diff(snap, local_manifest(cfg.root, cfg.path_filter, cfg.chunk_size, snap, repo))
    if args.json:
        lists = d.as_dict()
        # The lists as before (a name that is not UTF-8 escaped); "changes" gives every path with its bytes.
        print(json.dumps({"snapshot": record.id, "root": for_json(str(cfg.root)), "identical": d.empty,
                          **{label: [for_json(p) for p in paths] for label, paths in lists.items()},
                          "changes": [{"change": label, "path": for_json(p), "path_bytes_b64": bytes_b64(p)}
                                      for label, paths in lists.items() for p in paths]}, indent=2))
    else:
        for label, paths in (("added", d.added), ("changed", d.changed), ("removed", d.removed),
                             ("metadata", d.metadata)):
            for p in paths:
                print(f"{label:<9}{escape(p)}")
    return EXIT_SAME if d.empty else EXIT_DIFFERENT
