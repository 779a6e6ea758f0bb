#!/usr/bin/env python3
"""The guard fleet (issue 26.2): N satellite CA guards on one real Consul server, many guards
per process, all from 127.0.0.1, with the project's own ``Guard`` (its blocking query, its
checks). Not a CI test: nothing here is asserted.

    .venv/bin/python bench/fleet.py                          # N = 100, 500, 1000, 2000; ~10 min
    .venv/bin/python bench/fleet.py --quick                  # 20 guards, no baseline: under a minute
    .venv/bin/python bench/fleet.py --baseline-sizes ""      # without the code before the change

For each N: the guards start and read the published CA (nodes enrolled under it), Consul's CPU
is sampled over ``--idle`` seconds (60 by default: a blocking query's whole 55 s wait, so the
renewals are in it), then a CA with another key is published, and each guard's first
"mismatch" decision is its detection; latency = detection time - the time the PUT was sent.
Reported: latency p50 / p99 / max and misses, Consul's CPU (% of one core) idle and from the PUT
until 6 s after the last detection (the guards' confirmations, 2 x 2 s by default, are in it), Consul's RSS, and per guard: memory (RSS growth of the worker processes
while their guards start), threads and connections to Consul (counted in /proc).

"before" rows run the same workers on the code of ``--baseline-ref`` (git archive of its
statesync/, so both run in this one run on the same Consul); "after" on this worktree. The
Consul server allows 10,000 connections per client address (it refuses to start with a limit its file descriptors cannot hold): a fleet behind one address must
raise ``limits.http_max_conns_per_client`` (docs/RUNBOOK.md), which is what this measures past.
Every process started here is stopped by its PID. Writes bench/results/fleet.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import suites

REPO = Path(__file__).resolve().parent.parent
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- /proc readings ---------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime, stime


def status(pid: int | str, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def connections_to(port: int) -> int:
    """This process's established TCP connections to ``port`` on any address."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port and f[9] in inodes:
                count += 1
    return count


# -- a worker: many guards in one process -----------------------------------------------------

def worker(args) -> int:
    import logging

    import structlog
    # Only errors: a refused guard says so; 2,000 guards' info lines would measure the terminal.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    from statesync import config
    from statesync.consul.store import Store
    from statesync.guard.ca_watch import Guard
    from statesync.guard.logic import Verdict

    class TimedGuard(Guard):
        detected: float | None = None

        def _record(self, d, source):
            if d.verdict is Verdict.MISMATCH and self.detected is None:
                self.detected = time.time()
            super()._record(d, source)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    rss0, threads0 = status("self", "VmRSS"), status("self", "Threads")
    guards = []
    for i in range(args.first, args.first + args.count):
        cfg = config.load({"root": str(Path(args.roots) / f"sat{i}"), "prefix": args.prefix, "node": f"sat{i}",
                           "role": "satellite", "consul.addr": [args.addr], "guard.purge_window": 0}, env={})
        guards.append(TimedGuard(cfg, Store(cfg.consul), None))
    for g in guards:
        g.start()
    deadline = time.monotonic() + args.timeout
    while not stopping and time.monotonic() < deadline and not all(
            g.state.last is not None and g.state.last.verdict is Verdict.MATCH for g in guards):
        time.sleep(0.05)
    port = int(args.addr.rsplit(":", 1)[1])
    print(json.dumps({"ready": sum(1 for g in guards if g.state.last and g.state.last.verdict is Verdict.MATCH),
                      "rss_kib": status("self", "VmRSS") - rss0, "threads": status("self", "Threads") - threads0,
                      "connections": connections_to(port)}), flush=True)
    while not stopping and not all(g.detected for g in guards):
        time.sleep(0.01)
    print(json.dumps({"detected": [g.detected for g in guards]}), flush=True)
    # After the confirmations (2 x 2 s by default) and at least one periodic check: every thread
    # and connection a guard ever opens is open by now.
    settle = time.monotonic() + 6.0
    while not stopping and time.monotonic() < settle:
        time.sleep(0.1)
    print(json.dumps({"late": 1, "threads": status("self", "Threads") - threads0,
                      "connections": connections_to(port)}), flush=True)
    while not stopping:
        time.sleep(0.1)
    for g in guards:
        g.stop(0)
    return 0


# -- the parent: Consul, the fleet, the change ------------------------------------------------

def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_line(proc: subprocess.Popen, key: str, deadline: float) -> dict | None:
    import select
    while time.monotonic() < deadline:
        if not select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return None
        line = proc.stdout.readline()
        if not line:
            return None
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if key in doc:
            return doc
    return None


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def run_fleet(n: int, variant: str, pythonpath: str, agent, publisher, ca_old, work: Path, args) -> dict:
    from statesync import config
    from tests.certs import enrol, make_ca
    from tests.guardkit import publish
    prefix = f"fleet/{variant}-{n}"
    key = config.load({"consul.addr": [agent.addr], "prefix": prefix}, env={}).layout.ca
    roots = work / f"{variant}-{n}"
    for i in range(n):
        enrol(roots / f"sat{i}", ca_old, f"sat{i}")
    publish(publisher, key, ca_old)
    env = {**os.environ, "PYTHONPATH": pythonpath}
    procs = []
    try:
        for first in range(0, n, args.per_process):
            count = min(args.per_process, n - first)
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", "--addr", agent.addr, "--prefix", prefix, "--roots", str(roots),
                 "--first", str(first), "--count", str(count), "--timeout", str(args.timeout)],
                env=env, stdout=subprocess.PIPE, text=True, start_new_session=True))
        deadline = time.monotonic() + args.timeout + 30
        readies = [read_line(p, "ready", deadline) for p in procs]
        if any(r is None for r in readies):
            raise RuntimeError(f"{variant} N={n}: a worker never reported ready")
        ready = sum(r["ready"] for r in readies)
        cpu0, t0 = cpu_seconds(agent.proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = 100 * (cpu_seconds(agent.proc.pid) - cpu0) / (time.monotonic() - t0)
        cpu1, m1 = cpu_seconds(agent.proc.pid), time.monotonic()
        sent = time.time()
        publish(publisher, key, make_ca())
        deadline = time.monotonic() + args.timeout
        found = [read_line(p, "detected", deadline) for p in procs]
        # The change's whole cost to Consul: the answers, then each guard's consistent confirmations.
        late = [read_line(p, "late", time.monotonic() + 30) for p in procs]
        change_s = time.monotonic() - m1
        change_cpu = 100 * (cpu_seconds(agent.proc.pid) - cpu1) / change_s
        times = [t for doc in found if doc for t in doc["detected"] if t]
        lat = [t - sent for t in times]
        row = {"variant": variant, "n": n, "ready": ready, "detected": len(lat), "missed": n - len(lat),
               "p50_s": round(pct(lat, 0.5), 3) if lat else None, "p99_s": round(pct(lat, 0.99), 3) if lat else None,
               "max_s": round(max(lat), 3) if lat else None,
               "consul_idle_cpu_pct": round(idle_cpu, 2), "consul_change_cpu_pct": round(change_cpu, 1),
               "change_window_s": round(change_s, 2), "consul_rss_mib": round(status(agent.proc.pid, "VmRSS") / 1024),
               "rss_kib_per_guard": round(sum(r["rss_kib"] for r in readies) / n, 1),
               "threads_per_guard": round(sum(r["threads"] for r in readies) / n, 2),
               "connections_per_guard": round(sum(r["connections"] for r in readies) / n, 2),
               "threads_per_guard_after_change": round(sum(r["threads"] for r in late if r) / n, 2),
               "connections_per_guard_after_change": round(sum(r["connections"] for r in late if r) / n, 2),
               "processes": len(procs), "idle_s": args.idle}
        print(json.dumps(row), flush=True)
        return row
    finally:
        for p in procs:
            stop(p)


def markdown(report: dict) -> str:
    lines = [f"Run of {report['started']} ({report['seconds']} s, {report['cpus']} CPUs, load "
             f"{report['load_start'][0]:.1f} → {report['load_end'][0]:.1f}); before = {report['baseline_ref']}.", "",
             "| code | N | ready | detected | p50 / p99 / max | Consul CPU idle / at the change | Consul RSS "
             "| per guard: memory | threads, connections (started / after the change) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lat = "—" if r["p50_s"] is None else f"{r['p50_s']:.2f} / {r['p99_s']:.2f} / {r['max_s']:.2f} s"
        lines.append(f"| {r['variant']} | {r['n']:,} | {r['ready']:,} | {r['detected']:,} | {lat} "
                     f"| {r['consul_idle_cpu_pct']:.2f} % / {r['consul_change_cpu_pct']:.0f} % | {r['consul_rss_mib']} MiB "
                     f"| {r['rss_kib_per_guard']:.0f} KiB | {r['threads_per_guard']:.2f}, {r['connections_per_guard']:.2f} / "
                     f"{r['threads_per_guard_after_change']:.2f}, {r['connections_per_guard_after_change']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,500,1000,2000")
    ap.add_argument("--baseline-sizes", default="100,500", help="sizes also run on --baseline-ref's code")
    ap.add_argument("--baseline-ref", default="issue-25", help="git ref of the code before (default issue-25)")
    ap.add_argument("--quick", action="store_true", help="20 guards, no baseline, 2 s idle: proves every figure "
                    "can be measured (bench/run.py --quick)")
    ap.add_argument("--per-process", type=int, default=250, help="guards per worker process")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of idle Consul CPU sampled")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds a phase may take before it is abandoned")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/fleet.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("--addr", "--prefix", "--roots"):
        ap.add_argument(name, help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.quick:
        args.sizes, args.baseline_sizes, args.idle, args.per_process = "20", "", 2.0, 10
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped by PID: stop Consul and the workers too
    sys.path.insert(0, str(REPO))
    from statesync import config
    from statesync.consul.store import Store
    from tests.certs import make_ca
    from tests.support import ConsulAgent, find_consul
    sizes = [int(s) for s in args.sizes.split(",") if s]
    before = {int(s) for s in args.baseline_sizes.split(",") if s}
    work = Path(tempfile.mkdtemp(prefix="statesync-fleet-"))
    agent = ConsulAgent(find_consul(), dev=False, workdir=str(work / "consul"),
                        extra=["-hcl", "limits { http_max_conns_per_client = 10000 }"])
    rows = []
    started, load_start = time.time(), os.getloadavg()
    try:
        agent.start(timeout=60)
        publisher = Store(config.load({"consul.addr": [agent.addr], "prefix": "fleet"}, env={}).consul)
        old_tree = str(suites.export_code(args.baseline_ref, work / "baseline")) if before else ""
        ca = make_ca()
        for n in sizes:
            if n in before:
                rows.append(run_fleet(n, "before", old_tree, agent, publisher, ca, work, args))
            rows.append(run_fleet(n, "after", str(REPO), agent, publisher, ca, work, args))
    finally:
        agent.cleanup()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    out = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "seconds": round(time.time() - started), "cpus": os.cpu_count(),
           "load_start": load_start, "load_end": os.getloadavg(), "baseline_ref": args.baseline_ref, "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
