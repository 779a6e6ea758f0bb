"""``statesync restore``, whole: the disaster restore into --root, ``--if-empty`` (the init
container's start-up decision), ``--dry-run`` (what it would do, with diff(1)'s exit codes) and
``--include PATH --target DIR`` (some paths, anywhere)."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from .. import config
from ..consul.store import retry
from ..errors import EXIT_DIFFERENT, EXIT_OK, EXIT_SAME, NotFound, UsageError
from ..repo.repository import Repo
from ..sidecar.wiring import open_repo
from ..snapshot.names import escape
from .progress import Progress, aborting


def cmd_restore(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..restore import apply as rs
    from ..restore.fresh import refuse_unless_fresh
    from ..restore.rootlock import hold_root
    from ..restore.startup import StartOutcome, at_startup, mark_ready
    if args.fresh and not args.if_empty:
        raise UsageError("--fresh: only with --if-empty (a plain restore never starts afresh)")
    if args.paths or args.target is not None:
        return _restore_part(cfg, args)
    # A dry run writes nothing and takes no lock; everything else holds the root from here on.
    lock = contextlib.nullcontext() if args.dry_run else hold_root(cfg.root, "restore", create=True)
    with lock:
        if not args.dry_run:
            rs.recover(cfg.root)  # first: a half-swapped root must not pass for one holding state
        repo = open_repo(cfg)
        if args.if_empty and rs.has_icinga_state(cfg.state_dir):
            print(f"{escape(str(cfg.root))} already holds Icinga 2 state; nothing restored")
            if not args.dry_run:
                mark_ready(cfg.ready_file, StartOutcome("matched"))
            return EXIT_OK
        # --if-empty is the init container's start-up decision: it waits for Consul as the sidecar does.
        wait = at_startup if args.if_empty else retry
        try:
            record = wait(lambda: repo.record(args.snapshot))
        except NotFound:
            if args.if_empty and args.snapshot is None:
                if not args.fresh:
                    wait(lambda: refuse_unless_fresh(repo, cfg.node, cfg.prefix, cfg.role))
                print(f"no snapshot of node {cfg.node} yet; nothing restored")
                if not args.dry_run:
                    mark_ready(cfg.ready_file, StartOutcome("nothing-to-restore"))
                return EXIT_OK
            raise
        if args.dry_run:
            return _print_dry_run(cfg, repo, record, args)
        bar = Progress(sys.stderr, record.files, record.bytes, "restore")
        with aborting(bar):
            res = rs.restore(repo, record, cfg.root, force=args.force or args.if_empty, progress=bar.update,
                             subtrees=tuple(p for _, p in cfg.roots))
        bar.close()
        aside = f"; previous content moved to {escape(str(res.aside))}" if res.aside else ""
        print(f"restored snapshot {escape(record.id)} of node {cfg.node}: {res.files} files, {res.bytes} bytes "
              f"into {escape(str(cfg.root))}{aside}")
        mark_ready(cfg.ready_file, StartOutcome("restored", record.id))
    return EXIT_OK


def _print_dry_run(cfg: config.Config, repo: Repo, record, args: argparse.Namespace) -> int:
    """What ``restore`` with these flags would do to --root, written nowhere."""
    from ..restore.apply import user_entries
    from ..restore.local_manifest import local_manifest
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


def _restore_part(cfg: config.Config, args: argparse.Namespace) -> int:
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
    with aborting(bar):  # the error is the one line that follows
        res = rs.restore(repo, record, target, force=args.force, progress=bar.update,
                         subtrees=paths if live else (), manifest=part)
    bar.close()
    aside = f"; previous content moved to {escape(str(res.aside))}" if res.aside else ""
    print(f"restored {', '.join(escape(p) for p in paths)} of snapshot {escape(record.id)} of node {cfg.node}: "
          f"{res.files} files, {res.bytes} bytes into {escape(str(target))}{aside}")
    return EXIT_OK
