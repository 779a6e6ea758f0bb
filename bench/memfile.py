#!/usr/bin/env python3
"""Memory per file (issue 26, item 4): the peak resident set of statesync's commands and of its
daemon over trees of many small files, two versions side by side, and Consul's own.

    .venv/bin/python bench/memfile.py                      # 10k, 100k, 300k files; about 15 minutes
    .venv/bin/python bench/memfile.py --quick              # 500 and 2,000 files, no baseline; < 60 s
    .venv/bin/python bench/memfile.py --sizes 100000 --baseline main

The tree has the shape of Icinga 2's API-created objects, one small file per object
(/var/lib/icinga2/api/packages/_api/<stage>/conf.d/<type>s/<name>.conf, a few hundred bytes each,
as ``ConfigObjectUtility::CreateObjectConfig`` writes them): one host in six, the rest services
(``<host>%21<service>.conf``), beside the package's ``active-stage`` and ``include.conf`` files.

For each size, and for each version in turn (the baseline commit's ``statesync/``, exported with
``git archive`` as bench/dump_cost.py does, then this working tree), on a fresh single Consul
server (raft on disk, free loopback ports, stopped by pid):

- *backup*: ``statesync backup`` of the whole tree, node ``bench-backup``;
- *daemon*: ``statesync run --role master`` on the same tree as node ``bench-daemon``: its peak
  (VmHWM) until its initial commit is the head, then its resident set (VmRSS) after ``--idle``
  seconds of idle, then its peak after one new object file was written and committed (an
  incremental sync), then after three more and a garbage collection (``gc_interval`` 5 s here,
  ``--gc-interval``, so that one runs; it reads every kept snapshot);
- *verify*: ``statesync verify`` of the daemon's head (every chunk fetched and checked);
- *restore*: ``statesync restore`` of it into an empty directory (file count checked);
- *Consul*: its peak resident set (VmHWM) over the whole run, and per 100k files.

Each statesync process's peak is the largest VmHWM read from /proc while it runs (every 10 ms).
A watchdog kills Consul above ``--consul-rss-cap`` and every statesync process after
``--timeout`` seconds: the run ends by itself. The machine is shared with other work: peaks of
memory do not depend on it much, times do (none is reported as a result here).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import icinga_bench  # noqa: E402
import suites  # noqa: E402
from dump_cost import wait_head  # noqa: E402

from tests.support import ConsulAgent, clean_env, find_consul  # noqa: E402

MIB = 1024 * 1024
STAGE = "statesync-bench-1764547200-1"
SERVICES = ("ping4", "disk", "load", "procs", "ssh")
PHASES = ("backup", "daemon_initial", "daemon_idle", "daemon_change", "daemon_gc", "verify", "restore")
CHANGES = 4  # commits of the daemon before its garbage collection is measured
BUDGET = 256 * 1000 * 1000  # the 256 MB, in bytes: 244 MiB


def _say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def _host(k: int) -> str:
    return f"host-{k:06d}.example.com"


def make_tree(root: Path, files: int) -> None:
    """``files`` object files in an API package (plus its 3 own files), as Icinga 2 lays them out."""
    pkg = root / "api/packages/_api"
    (pkg / STAGE).mkdir(parents=True)
    (pkg / "active-stage").write_text(STAGE)
    (pkg / "include.conf").write_text('include "*/include.conf"\n')
    (pkg / STAGE / "include.conf").write_text('include_recursive "conf.d"\n')
    hosts = files // 6
    for sub in ("hosts", "services"):
        (pkg / STAGE / "conf.d" / sub).mkdir(parents=True)
    for k in range(hosts):
        write_object(root, "Host", k)
    for k in range(files - hosts):
        write_object(root, "Service", k)


def write_object(root: Path, kind: str, k: int) -> Path:
    """One object's file, with the attributes the API writes for it."""
    conf = root / "api/packages/_api" / STAGE / "conf.d"
    if kind == "Host":
        name = _host(k)
        path = conf / "hosts" / f"{name}.conf"
        text = (f'object Host "{name}" ignore_on_error {{\n\timport "generic-host"\n\n'
                f'\taddress = "10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"\n\tcheck_command = "hostalive"\n'
                f'\tvars.os = "Linux"\n\tversion = 1764547200.{k:06d}\n\tzone = "master"\n}}\n')
    else:
        host, service = _host(k // len(SERVICES)), SERVICES[k % len(SERVICES)]
        path = conf / "services" / f"{host}%21{service}.conf"
        text = (f'object Service "{service}" ignore_on_error {{\n\timport "generic-service"\n\n'
                f'\tcheck_command = "{service}"\n\thost_name = "{host}"\n\tversion = 1764547200.{k:06d}\n'
                f'\tzone = "master"\n}}\n')
    path.write_text(text)
    return path


class Proc:
    """A statesync process of one version's code, its peak RSS sampled every 10 ms."""

    def __init__(self, code: Path, args: list[str], env: dict, log: Path):
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "statesync", *args], env={**env, "PYTHONPATH": str(code)},
                                     cwd=str(code), stdout=self.log, stderr=subprocess.STDOUT)
        self.peak, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, icinga_bench.vm_hwm(self.proc.pid))

    def rss(self) -> int:
        return icinga_bench.proc_status(self.proc.pid, "VmRSS")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"statesync {self.proc.args[3:]} did not end within {timeout:.0f} s") from None
        finally:
            self._done.set()
            self._thread.join()
            self.log.close()
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._done.set()
        self._thread.join()
        self.log.close()


def one_command(code: Path, args: list[str], env: dict, log: Path, timeout: float, errors: dict) -> int:
    """Its peak; a command that fails has its last line in ``errors`` (a refusal is a result too)."""
    p = Proc(code, args, env, log)
    if p.wait(timeout) != 0:
        errors[args[0]] = " | ".join(log.read_text().strip().splitlines()[-2:])[-400:]
        _say(f"  statesync {' '.join(args)} failed: {errors[args[0]]}")
    return p.peak


def one_version(version: str, code: Path, tree: Path, files: int, consul_bin: str, work: Path, idle: float,
                timeout: float, rss_cap: int, gc_interval: float) -> dict:
    base = work / f"{version}-{files}"
    base.mkdir()
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(base / "consul"))
    agent.start(timeout=60)
    watchdog = icinga_bench.Watchdog(agent.proc.pid, rss_cap)
    prefix = "bench-memfile"
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(tree),
               STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    out: dict = {"version": version, "errors": {}}
    daemon = None
    try:
        out["backup"] = one_command(code, ["backup"], {**env, "STATESYNC_NODE": "bench-backup"}, base / "backup.log",
                                    timeout, out["errors"])
        denv = {**env, "STATESYNC_NODE": "bench-daemon", "STATESYNC_GC_INTERVAL": str(gc_interval)}
        head = f"{prefix}/nodes/bench-daemon/head"
        daemon = Proc(code, ["run", "--role", "master"], denv, base / "daemon.log")
        index, _ = wait_head(agent.addr, head, 0, timeout)
        out["daemon_initial"] = daemon.peak
        time.sleep(idle)
        out["daemon_idle"] = daemon.rss()
        added = [write_object(tree, "Host", 10 ** 6)]
        index, _ = wait_head(agent.addr, head, index, timeout)
        time.sleep(0.5)
        out["daemon_change"] = daemon.peak
        for k in range(1, CHANGES):
            added.append(write_object(tree, "Host", 10 ** 6 + k))
            index, _ = wait_head(agent.addr, head, index, timeout)
        time.sleep(2 * gc_interval)  # a garbage collection reads every kept snapshot
        out["daemon_gc"] = daemon.peak
        daemon.stop()
        for path in added:
            path.unlink()
        out["verify"] = one_command(code, ["verify"], denv, base / "verify.log", timeout, out["errors"])
        target = base / "restored"
        out["restore"] = one_command(code, ["restore"], {**denv, "STATESYNC_ROOT": str(target)},
                                     base / "restore.log", timeout, out["errors"])
        restored = sum(1 for _, _, names in os.walk(target) for f in names if not f.startswith(".statesync-"))
        if restored != files + 3 + CHANGES and "restore" not in out["errors"]:
            raise RuntimeError(f"restore wrote {restored} files, the snapshot holds {files + 3 + CHANGES}")
        out["consul"] = max(watchdog.peak, icinga_bench.vm_hwm(agent.proc.pid))
    finally:
        if daemon is not None:
            daemon.stop()
        watchdog.stop()
        agent.stop()
        shutil.rmtree(base, ignore_errors=True)
    if watchdog.killed:
        raise RuntimeError(f"Consul passed {rss_cap / MIB:.0f} MiB and was killed")
    _say(f"  [{files} files, {version}] " + ", ".join(f"{k} {out[k] / MIB:.0f} MiB" for k in (*PHASES, "consul")))
    return out


def per_file(rows: dict, small: int, large: int, phase: str) -> float:
    """Bytes per file a phase's peak grows by from ``small`` to ``large`` files."""
    return (rows[str(large)][phase] - rows[str(small)][phase]) / (large - small)


def markdown(report: dict) -> str:
    sizes = sorted(int(s) for s in next(iter(report["results"].values())))
    lines = ["| files | version | backup | daemon: initial commit | idle (RSS) | after a change | after 4 and a GC "
             "| verify | restore | Consul |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n in sizes:
        for version, rows in report["results"].items():
            r = rows[str(n)]
            cells = [("refused" if k.split("_")[0] in r.get("errors", {}) else
                      f"{r[k] / MIB:.0f}{' ⚠' if r[k] > BUDGET and k != 'consul' else ''}")
                     for k in (*PHASES, "consul")]
            lines.append(f"| {n:,} | {version} | " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        lines += ["", f"| bytes per file, growth from {sizes[0]:,} to {sizes[-1]:,} files | "
                  + " | ".join(report["results"]) + " |", "|---|" + "---|" * len(report["results"])]
        for phase in (*PHASES, "consul"):
            lines.append(f"| {phase.replace('_', ' ')} | " + " | ".join(
                f"{per_file(rows, sizes[0], sizes[-1], phase):.0f}" for rows in report["results"].values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,300000", help="comma-separated file counts")
    ap.add_argument("--baseline", default="main", help="the commit to compare with (default main); '' for none")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds the daemon idles before its RSS is read")
    ap.add_argument("--gc-interval", type=float, default=5.0, help="the daemon's gc_interval here (default 5 s)")
    ap.add_argument("--quick", action="store_true", help="500 and 2,000 files, no baseline (under a minute)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--consul-rss-cap", type=int, default=6 * 1024, help="MiB (default 6144)")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/memfile.json")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.baseline, args.idle, args.gc_interval = "500,2000", "", 1.0, 1.0
    consul_bin = find_consul()
    if consul_bin is None:
        _say("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
        return 2
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], check=True, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="statesync-memfile-", dir=args.workdir))
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["bench/memfile.py", *(argv if argv is not None else sys.argv[1:])]),
              "baseline": git("rev-parse", args.baseline) if args.baseline else "", "new": git("rev-parse", "HEAD"),
              "cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "quick": args.quick, "results": {}}
    versions = {"before": suites.export_code(args.baseline, work / "baseline")} if args.baseline else {}
    versions["after"] = REPO
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            tree = work / f"tree-{n}"
            make_tree(tree, n)
            _say(f"== {n} files")
            for version, code in versions.items():
                report["results"].setdefault(version, {})[str(n)] = one_version(
                    version, code, tree, n, consul_bin, work, args.idle, args.timeout, args.consul_rss_cap * MIB,
                    args.gc_interval)
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_at_end"] = os.getloadavg()
    return suites.write_report(report, args.json, markdown)


if __name__ == "__main__":
    sys.exit(main())
