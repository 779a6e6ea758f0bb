"""The commands that compare the local tree with a snapshot (``diff``, ``restore --dry-run``),
with diff(1)'s exit codes, and the partial restore (``restore --include PATH --target DIR``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .. import config
from ..errors import EXIT_DIFFERENT, EXIT_OK, EXIT_SAME, StatesyncError, UsageError
from ..repo.repository import Repo
from ..sidecar.wiring import open_repo
from ..snapshot.names import bytes_b64, escape, for_json
from .progress import Progress


def cmd_diff(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..restore.compare import local_manifest
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


def print_dry_run(cfg: config.Config, repo: Repo, record, args: argparse.Namespace) -> int:
    """What ``restore`` with these flags would do to --root, written nowhere."""
    from ..restore.apply import user_entries
    from ..restore.compare import local_manifest
    from ..snapshot.diffing import diff
    wanted = repo.manifest(record)
    # Restore's direction: "add" is in the snapshot and not in --root.
    d = diff(local_manifest(cfg.root, cfg.path_filter, cfg.chunk_size, wanted, repo), wanted)
    for label, paths in (("add", d.added), ("change", d.changed), ("meta", d.metadata), ("remove", d.removed)):
        for p in paths:
            print(f"{label:<7}{escape(p)}")
    head = f"dry run of snapshot {escape(record.id)}"
    root = escape(str(cfg.root))
    if d.empty:
        print(f"{head}: {root} already holds it; nothing would change; nothing written")
        return EXIT_SAME
    existing = user_entries(cfg.root, tuple(p for _, p in cfg.roots))
    if not existing:
        aside = "nothing to move aside"
    elif args.force or args.if_empty:
        aside = (f"{len(existing)} entries of {root} to move aside into .statesync-aside/<time>/ "
                 f"({', '.join(escape(e) for e in existing)})")
    else:
        aside = (f"{root} is not empty ({len(existing)} entries): restore refuses it without --force, "
                 f"which would move them aside into .statesync-aside/<time>/")
    print(f"{head}: {len(d.added)} to add, {len(d.changed)} to change, {len(d.metadata)} metadata only, "
          f"{len(d.removed)} to remove; {aside}; nothing written")
    return EXIT_DIFFERENT


def restore_part(cfg: config.Config, args: argparse.Namespace) -> int:
    """``restore --include PATH... --target DIR``: the paths, fetched and verified like a whole
    restore, into DIR; --root only when DIR is --root."""
    from ..restore import apply as rs
    from ..restore import partial
    if args.target is None:
        raise UsageError("--include: restores the included paths into --target DIR only (a whole restore "
                         "into --root takes no --include); add --target DIR")
    if not args.paths:
        raise UsageError("--target: name what to restore with --include PATH (repeatable)")
    if args.dry_run or args.if_empty or args.fresh:
        raise UsageError("--include/--target: not with --dry-run, --if-empty or --fresh")
    paths = partial.clean_paths(args.paths)
    repo = open_repo(cfg)
    record = repo.record(args.snapshot)
    part = partial.select(repo.manifest(record), paths, record.id)
    target = Path(os.path.abspath(args.target))
    # Into the live root only the included paths move: each, if present, aside under --force.
    live = os.path.realpath(target) == os.path.realpath(cfg.root)
    bar = Progress(sys.stderr, part.file_count, part.total_bytes, "restore")
    try:
        res = rs.restore(repo, record, target, force=args.force, progress=bar.update,
                         subtrees=paths if live else (), manifest=part)
    except BaseException:
        bar.abort()  # the error is the one line that follows
        raise
    bar.close()
    aside = f"; previous content moved to {escape(str(res.aside))}" if res.aside else ""
    print(f"restored {', '.join(escape(p) for p in paths)} of snapshot {escape(record.id)} of node {cfg.node}: "
          f"{res.files} files, {res.bytes} bytes into {escape(str(target))}{aside}")
    return EXIT_OK
