#!/usr/bin/env python3
"""Writer-lock takeover (not a CI test): how long a standby sidecar on the same root needs to
commit after the writer dies (SIGKILL: Consul must first let the writer's session expire, then
wait out the lock-delay) and after the writer stops cleanly (SIGTERM releases the lock).

tests/integration/test_ha_lock.py asserts that the standby takes over, in order and without a lost
change, on any machine; the times are measured here, where a number may be compared with a goal.

    .venv/bin/python bench/takeover.py                       # 5 rounds, lock.ttl 1 s, lock.delay 0.5 s
    .venv/bin/python bench/takeover.py --ttl 15 --delay 5    # the defaults (about 35 s a round)

Goals, reported and never enforced: after SIGKILL at most 2 x ttl + delay (Consul ends a
session within twice its TTL) plus 2 s; after SIGTERM under 2 s. Writes JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.ha_support import make_state_tree, node_repo  # noqa: E402
from tests.sidecar import Sidecar  # noqa: E402
from tests.support import ConsulAgent, find_consul, wait_for  # noqa: E402

PATIENCE = 300  # only to stop a hang


def _has(repo, path: str) -> bool:
    record = repo.head().record
    return record is not None and path in repo.manifest(record).by_path()


def _takes_over(repo, root: Path, name: str) -> float:
    """Write ``name`` now; the seconds until a head holds it."""
    started = time.monotonic()
    (root / name).write_text(f"written at {started}")
    wait_for(lambda: _has(repo, name), PATIENCE, what=f"{name} committed", step=0.02)
    return time.monotonic() - started


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="statesync-takeover-"))
    consul = ConsulAgent(find_consul(), workdir=str(work / "consul")).start()
    settings = {"lock_ttl": args.ttl, "lock_delay": args.delay, "keep": 1000, "debounce": 0.1, "max_wait": 0.5}
    root = work / "root"
    make_state_tree(root, 60, random.Random(1))
    repo = node_repo([consul.addr], "bench-takeover")
    killed, stopped = [], []
    writer = standby = None
    try:
        writer = Sidecar.start([consul.addr], "bench-takeover", root, work / "sidecar-0.log", ready_beside_log=True, **settings)
        wait_for(lambda: repo.head().record is not None, PATIENCE, what="first snapshot")
        for n in range(1, args.rounds * 2 + 1):
            standby = Sidecar.start([consul.addr], "bench-takeover", root, work / f"sidecar-{n}.log", ready_beside_log=True, **settings)
            wait_for(lambda s=standby: s.count('"waiting for the root lock"'), PATIENCE, what="standby waiting")
            if n % 2:
                writer.kill()
                killed.append(_takes_over(repo, root, f"api/after-kill-{n}.conf"))
                print(f"  takeover after SIGKILL: {killed[-1]:.2f} s", file=sys.stderr)
            else:
                assert writer.stop() == 0
                stopped.append(_takes_over(repo, root, f"api/after-stop-{n}.conf"))
                print(f"  handover after SIGTERM: {stopped[-1]:.2f} s", file=sys.stderr)
            writer = standby
        writer.stop()
    finally:
        for sidecar in (writer, standby):
            if sidecar is not None and sidecar.alive():
                sidecar.kill()
        consul.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    kill_goal = 2 * args.ttl + args.delay + 2
    return {"ttl_s": args.ttl, "delay_s": args.delay, "rounds": args.rounds,
            "after_sigkill_s": {"median": statistics.median(killed), "max": max(killed), "goal_max": kill_goal,
                                "met": max(killed) <= kill_goal, "reps": [round(x, 3) for x in killed]},
            "after_sigterm_s": {"median": statistics.median(stopped), "max": max(stopped), "goal_max": 2.0,
                                "met": max(stopped) < 2.0, "reps": [round(x, 3) for x in stopped]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="kills and clean stops, each (default 5)")
    parser.add_argument("--ttl", type=float, default=1.0, help="lock.ttl in seconds (default 1)")
    parser.add_argument("--delay", type=float, default=0.5, help="lock.delay in seconds (default 0.5)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    figures = run(args)
    for what in ("after_sigkill_s", "after_sigterm_s"):
        f = figures[what]
        print(f"{what}: median {f['median']:.2f} s, max {f['max']:.2f} s (goal <= {f['goal_max']:.1f} s: "
              f"{'met' if f['met'] else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
