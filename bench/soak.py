#!/usr/bin/env python3
"""Soak run (not a CI test): a sidecar mirrors a churning 2,000-file tree into a
three-server Consul cluster on loopback whose leader is SIGKILLed once a minute.

Reports commits, lost updates (must be 0), the sidecar's RSS at start and end (must
stay flat) and its CPU share. Once a minute, before the leader kill, the churn pauses
and the head must come to equal the tree within --settle seconds; every path that
still differs then counts as a lost update.

    .venv/bin/python bench/soak.py                      # 10 minutes, the documented run
    .venv/bin/python bench/soak.py --duration 120 -v    # a short one

Writes the report as JSON (--json) and Markdown (--markdown); exits 1 when updates were lost.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from statesync.snapshot import chunking  # noqa: E402
from statesync.snapshot import manifest as mf  # noqa: E402
from tests.ha_support import Churn, load_cfg, make_state_tree, node_repo, tree_manifest  # noqa: E402
from tests.sidecar import Sidecar  # noqa: E402
from tests.support import ConsulCluster, find_consul  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Checkpoint:
    at_s: float
    settled_s: float | None
    lost: int
    head: str


@dataclass
class Report:
    duration_s: float
    files: int
    churn_ops: int
    commits: int
    lost_updates: int
    leader_kills: int
    elections_s: list[float] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    rss_start_kib: int = 0
    rss_end_kib: int = 0
    rss_max_kib: int = 0
    cpu_share: float = 0.0
    commit_failures: int = 0
    lock_lost: int = 0
    sidecar_alive: bool = True


# -- pure ------------------------------------------------------------------------------

def differing_paths(head: mf.Manifest, tree: mf.Manifest) -> list[str]:
    """Paths whose entry differs between the head's manifest and the tree's (added, changed or removed)."""
    a, b = head.by_path(), tree.by_path()
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p))


def cpu_seconds(stat_line: str) -> float:
    """utime + stime of a /proc/<pid>/stat line, in seconds."""
    fields = stat_line[stat_line.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(status_text: str) -> int:
    """VmRSS of a /proc/<pid>/status text, in KiB."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def markdown(r: Report, command: str) -> str:
    elections = ", ".join(f"{e:.1f}" for e in r.elections_s) or "-"
    settled = [c.settled_s for c in r.checkpoints if c.settled_s is not None]
    lines = [
        f"Command: `{command}`",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| duration | {r.duration_s:.0f} s |",
        f"| tree | {r.files} files at start |",
        f"| churn operations | {r.churn_ops} ({r.churn_ops / r.duration_s:.1f}/s) |",
        f"| commits | {r.commits} |",
        f"| **lost updates** | **{r.lost_updates}** |",
        f"| leader kills | {r.leader_kills} (new leader after {elections} s) |",
        f"| checkpoints settled | {len(settled)}/{len(r.checkpoints)}, "
        f"max {max(settled, default=0):.2f} s after the churn paused |",
        f"| sidecar RSS start → end (max) | {r.rss_start_kib / 1024:.1f} → {r.rss_end_kib / 1024:.1f} MiB "
        f"({r.rss_max_kib / 1024:.1f}) |",
        f"| sidecar CPU share | {r.cpu_share * 100:.1f} % of one core |",
        f"| failed commit attempts (retried) | {r.commit_failures} |",
        f"| writer lock lost | {r.lock_lost} |",
    ]
    return "\n".join(lines) + "\n"


# -- the run ---------------------------------------------------------------------------

def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def run(args: argparse.Namespace) -> Report:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="statesync-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    cluster = ConsulCluster(find_consul(), str(work / "cluster")).start()
    sidecar = None
    churn = None
    try:
        prefix = f"soak/{os.getpid()}"
        root = work / "root"
        make_state_tree(root, args.files, rng, dirs=40)
        addrs = cluster.addrs
        cfg = load_cfg(addrs, prefix, root)
        repo = node_repo(addrs, prefix)
        settings = {"gc_interval": 60, "gc_grace": 30}
        sidecar = Sidecar.start(addrs, prefix, root, work / "sidecar.log", ready_beside_log=True, **settings)
        _until(lambda: repo.head().record is not None, 60, "first snapshot")
        say(args, f"first snapshot after start; sidecar pid {sidecar.pid}")

        churn = Churn(root, seed=args.seed + 1, rate=args.rate).start()
        started = time.monotonic()
        cpu0 = cpu_seconds(_proc(sidecar.pid, "stat"))
        report = Report(duration_s=0, files=args.files, churn_ops=0, commits=0, lost_updates=0, leader_kills=0)
        revive_at: list[tuple[float, object]] = []
        next_kill = started + args.kill_every
        next_sample = started
        end = started + args.duration
        while time.monotonic() < end:
            now = time.monotonic()
            if not sidecar.alive():
                report.sidecar_alive = False
                say(args, "sidecar died")
                break
            if now >= next_sample:
                rss = rss_kib(_proc(sidecar.pid, "status"))
                report.rss_max_kib = max(report.rss_max_kib, rss)
                if not report.rss_start_kib and now - started >= args.warmup:
                    report.rss_start_kib = rss
                next_sample = now + 5
            for due, server in list(revive_at):
                if now >= due:
                    cluster.revive(server)
                    revive_at.remove((due, server))
                    say(args, f"revived {server.node_name}")
            if now >= next_kill:
                report.checkpoints.append(checkpoint(args, churn, repo, cfg, now - started))
                cluster.wait_healthy(120)  # a revived server must be a voter again, or no quorum is left
                leader = cluster.wait_leader(30)
                cluster.kill(leader)
                t = time.monotonic()
                new = cluster.wait_leader(60, other_than=leader)
                report.elections_s.append(time.monotonic() - t)
                report.leader_kills += 1
                revive_at.append((time.monotonic() + args.revive_after, leader))
                say(args, f"killed leader {leader.node_name}; {new.node_name} leads after {report.elections_s[-1]:.2f}s")
                next_kill += args.kill_every
            time.sleep(0.2)
        for _, server in revive_at:
            cluster.revive(server)
        report.checkpoints.append(checkpoint(args, churn, repo, cfg, time.monotonic() - started))
        churn.stop()
        elapsed = time.monotonic() - started
        report.duration_s = elapsed
        report.churn_ops = churn.ops
        if sidecar.alive():
            report.cpu_share = (cpu_seconds(_proc(sidecar.pid, "stat")) - cpu0) / elapsed
            report.rss_end_kib = rss_kib(_proc(sidecar.pid, "status"))
            report.rss_max_kib = max(report.rss_max_kib, report.rss_end_kib)
        report.lost_updates = sum(c.lost for c in report.checkpoints)
        out = sidecar.output()
        report.commits = out.count('"event": "committed"')
        report.commit_failures = out.count('"commit failed; will retry"')
        report.lock_lost = out.count('"writer lock lost"')
        return report
    finally:
        try:
            if churn is not None:
                churn.stop()
            if sidecar is not None:
                if sidecar.alive():
                    sidecar.stop()
                if args.log_copy:
                    shutil.copy(sidecar.log, args.log_copy)
        finally:
            cluster.cleanup()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)


def checkpoint(args, churn: Churn, repo, cfg, at: float) -> Checkpoint:
    """Pause the churn and give the sidecar ``args.settle`` seconds to make the head equal the tree."""
    churn.pause(True)
    try:
        paused = time.monotonic()
        tree = tree_manifest(cfg)
        want = chunking.sha256(mf.encode(tree))
        record = None
        while time.monotonic() - paused < args.settle:
            record = repo.head().record
            if record is not None and record.manifest_sha256 == want:
                settled = time.monotonic() - paused
                say(args, f"checkpoint at {at:.0f}s: head equals the tree after {settled:.2f}s")
                return Checkpoint(at, settled, 0, record.id)
            time.sleep(0.1)
        lost = differing_paths(repo.manifest(record), tree) if record else [e.path for e in tree.entries]
        say(args, f"checkpoint at {at:.0f}s: {len(lost)} path(s) differ after {args.settle}s: {lost[:5]}")
        return Checkpoint(at, None, len(lost), record.id if record else "")
    finally:
        churn.pause(False)


def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"soak: {what} not reached within {timeout}s")
        time.sleep(0.2)


def say(args, text: str) -> None:
    if args.verbose:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of churn (default 600)")
    p.add_argument("--files", type=int, default=2000, help="files in the tree at start (default 2000)")
    p.add_argument("--rate", type=float, default=20.0, help="churn operations per second (default 20)")
    p.add_argument("--kill-every", type=float, default=60.0, help="seconds between leader kills (default 60)")
    p.add_argument("--revive-after", type=float, default=20.0, help="seconds before a killed server restarts")
    p.add_argument("--settle", type=float, default=30.0, help="seconds the head may take to equal the tree")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before the start RSS is taken")
    p.add_argument("--seed", type=int, default=6)
    p.add_argument("--workdir", help="keep everything here (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--log-copy", help="copy the sidecar's log here")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--markdown", help="write the report as Markdown here")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    report = run(args)
    command = "python bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(report, command.strip())
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if report.lost_updates == 0 and report.sidecar_alive else 1


if __name__ == "__main__":
    sys.exit(main())
