"""``statesync forget``: remove the snapshot records the retention rules do not keep (``--dry-run``: show why)."""
from __future__ import annotations

import argparse

from .. import config
from ..errors import EXIT_OK
from ..repo import prune
from ..sidecar.wiring import open_repo, rules
from ..snapshot.keep_rules import id_time


def cmd_forget(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    r = rules(cfg)
    plan = prune.plan(repo.store, repo.layout, r)
    if not plan.reasons:
        print(f"no snapshots for node {cfg.node} under {cfg.prefix}")
        return EXIT_OK
    forgotten = plan.forgotten
    if args.dry_run:
        print(f"{'ID':<32} {'CREATED':<26} {'ACTION':<7} REASONS")
        for sid, why in plan.reasons.items():  # newest first in commit order
            created = id_time(sid).isoformat(timespec="seconds")
            print(f"{sid:<32} {created:<26} {'keep' if why else 'remove':<7} {','.join(why) or '-'}")
        print(f"dry run ({r.describe()}): {len(forgotten)} of {len(plan.reasons)} snapshot(s) would be removed; "
              f"nothing removed")
        return EXIT_OK
    count = prune.forget(repo.store, repo.layout, plan)
    for sid in forgotten:
        print(f"removed {sid}")
    print(f"removed {count} of {len(plan.reasons)} snapshot(s) of node {cfg.node} ({r.describe()}); their chunks "
          f"go with the next garbage collection (statesync gc, or the sidecar's) after gc_grace")
    return EXIT_OK
