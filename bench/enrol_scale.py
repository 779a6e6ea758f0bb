#!/usr/bin/env python3
"""Enrolment at scale (issue 26): N satellite registrations at once against a real master. Not a CI test.

    .venv/bin/python bench/enrol_scale.py                      # 200 at once, issue-25 (before) and this checkout
    .venv/bin/python bench/enrol_scale.py -n 20 --before ''    # this checkout only, small

One real Consul (a single server with a data dir), and per code under test one real master:
Icinga 2 in a mount namespace (tests/icinga.py, the host's 2.13.6 unless --icinga-root) with
its statesync sidecar accepting, and one real satellite sat1 enrolled through Consul and
connected before the burst. Then N satellites arrive at once: each a real key and a
self-signed certificate of the shape ``node setup`` without a ticket leaves
(tests/certs.pending_request), its pending request written into the master's
certificate-requests/ as Icinga 2 writes it, and its registration written into Consul by a
pool of --writers threads released together, as N enrollers would write them: within an instant
(spread 0) and over --spread seconds (8 by default: a fleet's sidecars starting together).

Reported per code, from what really happened: the time until Icinga 2 runs all N Endpoints
of the package (accepted), until all N requests carry a signed certificate (signed), the
stages the sidecar activated (its "accepted satellites staged" events) and the reloads
Icinga 2 logged, and the time until sat1, connected before the burst, is connected again
after the last drop it had. ``--before REF`` runs the same burst with the sidecar of git
ref REF (exported into a temporary directory) first, on the same Consul and machine.

Every process is stopped by PID (tests/scenarios.py); each wait is bounded by --timeout.
Writes bench/results/enrol-scale.json (git-ignored) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


import suites  # noqa: E402

from tests import enrol_burst as eb  # noqa: E402
from tests import icinga  # noqa: E402
from tests.e2e.test_e2e_icinga import Cluster  # noqa: E402
from tests.sidecar import Sidecar  # noqa: E402
from tests.support import ConsulAgent, find_consul  # noqa: E402


class BenchCluster(Cluster):
    """tests/e2e/test_e2e_icinga.Cluster whose sidecars run the statesync in ``code``."""

    tag = "bench"

    def __init__(self, consul, base: Path, icinga_root: str, code: Path):
        self.code = code
        super().__init__(consul, base, icinga_root)

    def sidecar_process(self, node, role: str, **env: str) -> Sidecar:
        self.runs += 1
        log = self.base / f"sidecar-{node.cn}-{self.runs}.log"
        # ``python -m`` imports from its working directory first: run in the code under test.
        return Sidecar.start(self.consul.addr, self.prefix, node.lib, log, node.cn, role, cwd=self.code,
                             plaintext=False, encryption_key_file=self.key_file, PYTHONPATH=str(self.code),
                             **{icinga.SESSION_VAR: self.session}, **env)


def burst(code: Path, label: str, consul, base: Path, n: int, icinga_root: str, timeout: float, writers: int,
          spread: float) -> dict:
    where = base / f"{'before' if code != REPO else 'after'}-{spread:g}" / "nodes"
    where.mkdir(parents=True)
    c = BenchCluster(consul, where, icinga_root, code)
    try:
        c.enrol_and_connect(STATESYNC_ENROL_INTERVAL="30")
        time.sleep(3)  # sat1's enrolment stage and reload are over
        sats = eb.satellites(n)
        eb.write_requests(c, sats)
        cns, fps = {s["cn"] for s in sats}, {s["fp"] for s in sats}
        staged0, reloads0 = len(eb.stages(c)), eb.reloads(c)
        share = -(-n // max(1, min(writers, n)))  # registrations per writer
        t0 = eb.register(c, sats, writers, gap=spread / max(1, share - 1) if share > 1 else 0.0)
        t_accepted = t_signed = None
        drops, was_up, up_again = 0, True, t0
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            up = bool(c.api.connected(c.sat.cn))
            if was_up and not up:
                drops += 1
            if up and not was_up:
                up_again = now
            was_up = up
            if t_accepted is None and cns <= (eb.in_package(c) or set()):
                t_accepted = now
            if t_signed is None and eb.signed(c, fps) == n:
                t_signed = now
            if t_accepted and t_signed and up and now - max(t_signed, up_again) > 10:
                break  # nothing more to come: the last stage's reload is long over
            time.sleep(0.1)
        staged = eb.stages(c)[staged0:]
        return {"label": label, "code": str(code), "n": n, "spread_s": spread, "accepted_s": _since(t0, t_accepted),
                "signed_s": _since(t0, t_signed), "stages": len(staged), "reloads": eb.reloads(c) - reloads0,
                "stage_sizes": [len(s) for s in staged], "sat1_drops": drops,
                "sat1_connected_again_s": round(up_again - t0, 2) if drops else 0.0,
                "complete": bool(t_accepted and t_signed)}
    finally:
        problems = c.cleanup()
        if problems:
            print(f"{label}: cleanup: {problems}", file=sys.stderr)


def _since(t0: float, t: float | None) -> float | None:
    return None if t is None else round(t - t0, 2)


def table(results: list[dict]) -> str:
    rows = ["| code | N | written over (s) | all accepted (s) | all signed (s) | stages | reloads | sat1 drops | sat1 connected again (s) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r['label']} | {r['n']} | {r['spread_s']:g} | {r['accepted_s']} | {r['signed_s']} | {r['stages']} | "
                    f"{r['reloads']} | {r['sat1_drops']} | {r['sat1_connected_again_s']} |")
    return "\n".join(rows)


def markdown(report: dict) -> str:
    return (f"Run of {report['when']} ({report['cpus']} CPUs, Icinga 2 {report['icinga']}).\n\n"
            + table(report["results"]) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="registrations written at once (default 200)")
    ap.add_argument("--before", default="issue-25", help="git ref whose sidecar runs the same burst first ('' for none)")
    ap.add_argument("--quick", action="store_true", help="5 registrations at once, no baseline: proves every figure "
                    "can be measured (bench/run.py --quick)")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/enrol-scale.json")
    ap.add_argument("--icinga-root", default="", help="an Icinga 2 root of scripts/icinga_roots.sh (default: the host's)")
    ap.add_argument("--writers", type=int, default=32, help="threads writing the registrations (default 32)")
    ap.add_argument("--spread", type=lambda v: [float(x) for x in v.split(",")], default=[0.0, 8.0],
                    help="seconds over which the registrations are written, one burst each (default 0,8)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs) for a look afterwards")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds each burst may take at most")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.before, args.spread = 5, "", [0.0]
    icinga.require_nodes(args.icinga_root)
    work = Path(tempfile.mkdtemp(prefix="statesync-enrol-bench-"))
    consul = ConsulAgent(find_consul(), dev=False, workdir=str(work / "consul")).start()
    results = []
    try:
        plan = ([(args.before, suites.export_code(args.before, work / "before"))] if args.before else []) + [("this checkout", REPO)]
        for spread in args.spread:
            for label, code in plan:
                r = burst(code, label, consul, work, args.n, args.icinga_root, args.timeout, args.writers, spread)
                print(json.dumps(r), flush=True)
                results.append(r)
    finally:
        consul.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    doc = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
           "cpus": os.cpu_count(), "icinga": ".".join(map(str, icinga.icinga_version(args.icinga_root))),
           "results": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2))
    print(markdown(doc))
    return 0 if all(r["complete"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
