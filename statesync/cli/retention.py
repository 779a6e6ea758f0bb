"""The retention commands: pin, unpin, forget (with --dry-run) and gc."""
from __future__ import annotations

import argparse

from .. import config
from ..consul.lock import describe_holder, holding_writer_lock
from ..errors import EXIT_OK, LockHeld
from ..repo import retention
from ..sidecar.wiring import open_repo, rules
from ..snapshot.retention import id_time


def cmd_pin(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    changed = retention.set_pin(repo.store, repo.layout, args.snapshot, True)
    print(f"snapshot {args.snapshot} of node {cfg.node} {'pinned' if changed else 'was pinned already'}: "
          f"no retention rule removes it")
    return EXIT_OK


def cmd_unpin(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    changed = retention.set_pin(repo.store, repo.layout, args.snapshot, False)
    print(f"snapshot {args.snapshot} of node {cfg.node} {'unpinned' if changed else 'was not pinned'}")
    return EXIT_OK


def cmd_forget(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    r = rules(cfg)
    plan = retention.plan(repo.store, repo.layout, r)
    if not plan.reasons:
        print(f"no snapshots for node {cfg.node} under {cfg.prefix}")
        return EXIT_OK
    doomed = plan.doomed
    if args.dry_run:
        print(f"{'ID':<32} {'CREATED':<26} {'ACTION':<7} REASONS")
        for sid, why in plan.reasons.items():  # newest first in commit order
            created = id_time(sid).isoformat(timespec="seconds")
            print(f"{sid:<32} {created:<26} {'keep' if why else 'remove':<7} {','.join(why) or '-'}")
        print(f"dry run ({r.describe()}): {len(doomed)} of {len(plan.reasons)} snapshot(s) would be removed; "
              f"nothing removed")
        return EXIT_OK
    count = retention.forget(repo.store, repo.layout, plan)
    for sid in doomed:
        print(f"removed {sid}")
    print(f"removed {count} of {len(plan.reasons)} snapshot(s) of node {cfg.node} ({r.describe()}); their chunks "
          f"go with the next garbage collection (statesync gc, or the sidecar's) after gc_grace")
    return EXIT_OK


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


def snapshot_rows(repo) -> tuple[list, set[str]]:
    """The records of ``statesync snapshots`` (oldest first in commit order) and the pinned ids among them."""
    head = repo.head().record
    return repo.records(head.id if head else ""), set(retention.read_pins(repo.store, repo.layout)[0])
