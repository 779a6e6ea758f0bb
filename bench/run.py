#!/usr/bin/env python3
"""Every benchmark of statesync, from one command (issues 8, 17, 26). Not a CI test.

    .venv/bin/python bench/run.py            # everything: the figures, then each suite; about two hours
    .venv/bin/python bench/run.py --quick    # tiny sizes: checks that every figure can be measured
    .venv/bin/python bench/run.py --only backup,restore,guard,daemon,icinga-state   # the figures only, ~12 min
    .venv/bin/python bench/run.py --only fleet --no-docs   # one suite (bench/suites.py lists them)

Every figure is taken beside its baseline in the same run (statesync and the raw limit
alternate repetition by repetition), and medians over the repetitions are reported,
ratios too, so that a ratio holds on a noisy machine. Each Consul is a real process on
free loopback ports: ``server`` is a single server with its raft log on disk (the
headline figures), ``dev`` an in-memory dev agent. See docs/BENCH.md for what each
figure measures and the last full run.

The suites (bench/suites.py: dump cost, the fleet, enrolment, capacity, the engine stack, memory per
file, the restore's floor) are scripts
of their own, each run as a process with its own Consul and its own baseline, the code of
``--baseline`` beside the working tree.

Writes bench/results/latest.json and latest.md (git-ignored); a full run also writes
docs/BENCH.json and docs/BENCH.md (the figures' table, and each suite's table between its
markers) unless --no-docs. Exit status 0 once every figure was
measured; goals are reported, never enforced.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import raw as rawlib  # noqa: E402
import suites  # noqa: E402

from statesync import config  # noqa: E402
from statesync.consul.store import Store  # noqa: E402
from statesync.pki import fingerprint  # noqa: E402
from statesync.repo.repository import Repo  # noqa: E402
from statesync.restore.apply import restore  # noqa: E402
from statesync.snapshot import chunking  # noqa: E402
from statesync.snapshot.manifest import FILE  # noqa: E402
from statesync.snapshot.record import decode_record  # noqa: E402
from statesync.tree.scan import Scanner  # noqa: E402
from tests.support import ConsulAgent, clean_env, find_consul, statesync_cmd  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB, MIB = 1024, 1024 * 1024

# Sizes and repetitions. "quick" only proves that every figure can be measured.
PLANS = {
    "full": dict(tree_a=1_000, tree_b=10_000, big=20 * MIB, file_size=4 * KIB,
                 backup_reps=5, big_reps=5, incremental=11, restore_reps=5, writes=200, debounce=0.5,
                 idle_s=60.0, guard_default_rounds=5, guard_tuned_rounds=25),
    "quick": dict(tree_a=40, tree_b=200, big=1 * MIB, file_size=4 * KIB,
                  backup_reps=2, big_reps=2, incremental=3, restore_reps=2, writes=4, debounce=0.1,
                  idle_s=2.0, guard_default_rounds=1, guard_tuned_rounds=2),
}
# Guard settings of the "tuned" figure (the default is 2 confirmations 2 s apart).
GUARD_TUNED = {"confirmations": 2, "confirm_interval": 0.25}
GOALS = {"backup_ratio": 1.3, "incremental_ops": 5, "incremental_ms": 100.0, "restore_ratio": 1.5,
         "latency_extra_s": 0.3, "guard_p99_s": 2.0, "idle_cpu_pct": 0.5, "idle_rss_mb": 80.0}


def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


def pctl(xs, q: float):
    """Nearest-rank percentile: the smallest value with at least ``q`` of the samples at or below it."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(len(s) * q) - 1))]


def _r(x, nd=4):
    return None if x is None else round(x, nd)


# -- the machine -----------------------------------------------------------------------

def machine(workdir: Path, consul_bin: str) -> dict:
    model = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    fs = ""
    best = ""
    with open("/proc/mounts") as fh:
        for line in fh:
            dev, mnt, kind = line.split()[:3]
            if str(workdir).startswith(mnt) and len(mnt) >= len(best):
                best, fs = mnt, f"{kind} ({dev} on {mnt})"
    version = subprocess.run([consul_bin, "version"], capture_output=True, text=True, timeout=10).stdout
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem_kb / 1024 / 1024, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "consul_version": version.splitlines()[0] if version else "?", "workdir_fs": fs}


def busy_processes() -> list[str]:
    """Other processes that would make the machine noisy: test suites, other Consul agents."""
    me, out = os.getpid(), []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("pytest" in cmd or "consul agent" in cmd or "statesync" in cmd) and "bench/run.py" not in cmd:
            out.append(cmd[:120])
    return out


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int, name: str) -> int:
    """A VmRSS/VmHWM-style line of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def proc_write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def settle() -> None:
    """Start each timed repetition on a quiet disk: flush what earlier ones left dirty (untimed)."""
    os.sync()
    time.sleep(0.2)


# -- trees -----------------------------------------------------------------------------

def make_tree(root: Path, files: int, size: int, per_dir: int = 100) -> None:
    for i in range(files):
        d = root / f"zone{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"object{i:05d}.conf").write_bytes(os.urandom(size))


def tree_files(root: Path) -> list[str]:
    """The tree's files, without statesync's own (.statesync-ready and the like)."""
    return sorted(rel for p in root.rglob("*") if p.is_file()
                  and not (rel := str(p.relative_to(root))).startswith(".statesync-"))


class Bench:
    """Figures against one Consul agent."""

    def __init__(self, agent: ConsulAgent, mode: str, work: Path, plan: dict, consul_bin: str):
        self.agent, self.mode, self.work, self.plan, self.consul_bin = agent, mode, work, plan, consul_bin
        self.rng = random.Random(8)

    def cfg(self, prefix: str, root: Path, **extra) -> config.Config:
        flags = {"root": str(root), "prefix": prefix, "node": "bench", "consul.addr": [self.agent.addr],
                 "log.format": "json", **extra}
        return config.load(flags, env={})

    @staticmethod
    def repo(cfg: config.Config) -> Repo:
        return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)

    def raw(self) -> rawlib.RawConsul:
        return rawlib.RawConsul(self.agent.addr)

    def drop(self, prefix: str) -> None:
        raw = self.raw()
        raw.delete_tree(prefix + "/")
        raw.close()

    def raft_index(self) -> int:
        raw = self.raw()
        doc = json.loads(raw.call("GET", "/v1/agent/self"))
        raw.close()
        return int(doc["Stats"]["raft"]["last_log_index"])

    def raft_db(self) -> Path | None:
        path = self.agent.workdir / "data" / "raft" / "raft.db"
        return path if not self.agent.dev and path.exists() else None

    # -- initial backup ----------------------------------------------------------------

    def backup_once(self, prefix: str, root: Path) -> tuple[float, dict]:
        cfg = self.cfg(prefix, root)
        started = time.perf_counter()
        repo = self.repo(cfg)
        head = repo.head()
        known = set(repo.refs(head.record)) if head.record is not None else set()
        # as `statesync backup` does it (cli/backup.cmd_backup): chunks go up while the scan reads
        with repo.chunk_stream() as stream:
            scan = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size).scan(known, sink=stream.add)
        res = repo.commit(scan, head, known, meta={"command": "bench"}, sent=stream.sent)
        seconds = time.perf_counter() - started
        return seconds, {"kv_writes": repo.store.stats.kv_writes, "requests": repo.store.stats.requests,
                         "chunks": res.chunks_written}

    def fig_backup(self, name: str, root: Path, reps: int) -> dict:
        cfg = self.cfg("x", root)
        files = tree_files(root)
        pieces: list[tuple[str, bytes]] = []
        for rel in files:
            data = (root / rel).read_bytes()
            pieces += chunking.address(data, cfg.chunk_size)[1]
        total = sum(len(p) for _, p in pieces)
        ss, raw, ratios, detail = [], [], [], {}
        for rep in range(reps):
            for which in (("raw", "ss") if rep % 2 == 0 else ("ss", "raw")):
                prefix = f"bench/{self.mode}/{which}-{name}-{rep}"
                settle()
                if which == "raw":
                    layout = self.cfg(prefix, root).layout
                    items = [(layout.chunk(d), p) for d, p in pieces]
                    client = self.raw()
                    t0 = time.perf_counter()
                    requests = rawlib.upload(client, items)
                    raw.append(time.perf_counter() - t0)
                    client.close()
                    detail["raw_requests"] = requests
                else:
                    seconds, detail_ss = self.backup_once(prefix, root)
                    ss.append(seconds)
                    detail.update(detail_ss)
                self.drop(prefix)
            ratios.append(ss[-1] / raw[-1])
            say(f"  [{self.mode}] backup {name} rep {rep}: statesync {ss[-1]:.3f}s raw {raw[-1]:.3f}s "
                f"ratio {ratios[-1]:.2f}")
        return {"files": len(files), "bytes": total, "statesync_s": _r(median(ss)), "raw_s": _r(median(raw)),
                "ratio": _r(median(ratios), 3), "ratio_of_medians": _r(median(ss) / median(raw), 3),
                "statesync_reps_s": [_r(x) for x in ss], "raw_reps_s": [_r(x) for x in raw], **detail,
                "goal_ratio": GOALS["backup_ratio"], "met": median(ratios) <= GOALS["backup_ratio"]}

    # -- incremental commit, Consul's raft cost, restore ----------------------------------

    def fig_incremental_and_restore(self, root: Path, changes: int, reps: int) -> tuple[dict, dict, dict]:
        prefix = f"bench/{self.mode}/main"
        cfg = self.cfg(prefix, root)
        repo = self.repo(cfg)
        scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
        known: set[str] = set()
        res = repo.commit(scanner.scan(known), repo.head(), known)
        head = res.head
        files = tree_files(root)
        consul_pid = self.agent.proc.pid
        raft_db = self.raft_db()
        rows = []
        for i in range(changes):
            rel = self.rng.choice(files)
            (root / rel).write_bytes(os.urandom(self.plan["file_size"]))
            wb0 = proc_write_bytes(consul_pid)
            db0 = raft_db.stat().st_size if raft_db else 0
            idx0 = self.raft_index()
            req0, sent0 = repo.store.stats.requests, repo.store.stats.bytes_sent
            t0 = time.perf_counter()
            scan = scanner.scan(known, dirty=[rel])
            res = repo.commit(scan, head, known)
            seconds = time.perf_counter() - t0
            head = res.head
            rows.append({"seconds": seconds, "kv_writes": res.kv_writes,
                         "requests": repo.store.stats.requests - req0,
                         "bytes_sent": repo.store.stats.bytes_sent - sent0,
                         "chunks_written": res.chunks_written, "bytes_written": res.bytes_written,
                         "raft_entries": self.raft_index() - idx0,
                         "consul_write_bytes": proc_write_bytes(consul_pid) - wb0,
                         "raft_db_growth": (raft_db.stat().st_size - db0) if raft_db else None})
            say(f"  [{self.mode}] incremental {i}: {seconds * 1000:.1f} ms, {res.kv_writes} KV writes, "
                f"{rows[-1]['requests']} requests, {res.bytes_written} chunk bytes, "
                f"consul wrote {rows[-1]['consul_write_bytes']} B")
        ms = [r["seconds"] * 1000 for r in rows]
        ops = [r["kv_writes"] for r in rows]
        inc = {"tree_files": len(files), "changes": changes, "ms_median": _r(median(ms), 2), "ms_max": _r(max(ms), 2),
               "ms_reps": [_r(x, 2) for x in ms], "kv_writes_median": median(ops), "kv_writes_max": max(ops),
               "requests_median": median([r["requests"] for r in rows]),
               "chunk_bytes_median": median([r["bytes_written"] for r in rows]),
               "goal_ops": GOALS["incremental_ops"], "goal_ms": GOALS["incremental_ms"],
               "met": max(ops) <= GOALS["incremental_ops"] and median(ms) < GOALS["incremental_ms"]}
        raft = {"payload_bytes_median": median([r["bytes_sent"] for r in rows]),
                "raft_entries_median": median([r["raft_entries"] for r in rows]),
                "consul_write_bytes_median": median([r["consul_write_bytes"] for r in rows]) if raft_db else None,
                "raft_db_growth_total": sum(r["raft_db_growth"] for r in rows) if raft_db else None,
                "snapshots": changes,
                "note": ("server: /proc/<consul>/io write_bytes per snapshot (what Consul's process sent to the "
                         "disk: raft log pages, BoltDB meta and freelist pages), raft.db growth over all of them"
                         if raft_db else "dev agent: raft log in memory, nothing written to disk")}
        rst = {"disk": self.fig_restore(repo, cfg, reps, self.work)}
        if Path("/dev/shm").is_dir():
            shm = Path(tempfile.mkdtemp(prefix="statesync-bench-", dir="/dev/shm"))
            try:
                rst["tmpfs"] = self.fig_restore(repo, cfg, reps, shm)
            finally:
                shutil.rmtree(shm, ignore_errors=True)
        self.drop(prefix)
        return inc, raft, rst

    def fig_restore(self, repo: Repo, cfg: config.Config, reps: int, base: Path) -> dict:
        record = repo.head().record
        manifest = repo.manifest(record)
        files = [(e.path, list(e.chunks)) for e in manifest.entries if e.type == FILE]
        chunks_prefix = cfg.layout.chunks
        ss, raw, export, ratios = [], [], [], []
        # Restored trees are removed only after the last repetition: on this kind of ext4
        # (online discard), creating files right after deleting thousands is several times slower.
        targets: list[Path] = []
        for rep in range(reps):
            for which in (("raw", "ss", "export") if rep % 2 == 0 else ("export", "ss", "raw")):
                target = base / f"restore-{self.mode}-{which}-{rep}"
                settle()
                if which == "ss":
                    t0 = time.perf_counter()
                    r = self.repo(cfg)
                    res = restore(r, r.record(), target)
                    ss.append(time.perf_counter() - t0)
                    assert res.files == len(files)
                elif which == "raw":
                    client = self.raw()
                    t0 = time.perf_counter()
                    values = rawlib.download(client, chunks_prefix)
                    rawlib.write_files(target, files, values, cfg.layout.chunk)
                    raw.append(time.perf_counter() - t0)
                    client.close()
                else:
                    t0 = time.perf_counter()
                    subprocess.run([self.consul_bin, "kv", "export", f"-http-addr=http://{self.agent.addr}",
                                    chunks_prefix], stdout=subprocess.DEVNULL, check=True, timeout=300)
                    export.append(time.perf_counter() - t0)
                targets.append(target)
            ratios.append(ss[-1] / raw[-1])
            say(f"  [{self.mode}] restore into {base} rep {rep}: statesync {ss[-1]:.3f}s raw {raw[-1]:.3f}s "
                f"consul kv export {export[-1]:.3f}s")
        for target in targets:
            shutil.rmtree(target, ignore_errors=True)
        return {"target": "tmpfs (/dev/shm)" if str(base).startswith("/dev/shm") else "the work directory's filesystem",
                "files": len(files), "bytes": manifest.total_bytes, "statesync_s": _r(median(ss)),
                "raw_s": _r(median(raw)), "kv_export_s": _r(median(export)), "ratio": _r(median(ratios), 3),
                "ratio_of_medians": _r(median(ss) / median(raw), 3),
                "statesync_reps_s": [_r(x) for x in ss], "raw_reps_s": [_r(x) for x in raw],
                "kv_export_reps_s": [_r(x) for x in export], "goal_ratio": GOALS["restore_ratio"],
                "met": median(ratios) <= GOALS["restore_ratio"] and median(ss) < median(export)}

    # -- the daemon: change-to-committed latency, then idle cost ----------------------------

    def sidecar(self, root: Path, prefix: str, node: str, role: str, env: dict) -> tuple[subprocess.Popen, Path]:
        full = clean_env()
        full.update(CONSUL_HTTP_ADDR=self.agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
                    STATESYNC_NODE=node, STATESYNC_LOG_FORMAT="json",
                    STATESYNC_ALLOW_PLAINTEXT_SECRETS="true", **env)
        log = self.work / f"sidecar-{self.mode}-{node}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(statesync_cmd("run", "--role", role), env=full, stdout=fh,
                                    stderr=subprocess.STDOUT, cwd=str(REPO))
        return proc, log

    @staticmethod
    def stop(proc: subprocess.Popen) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def fig_daemon(self, root: Path, writes: int, debounce: float, idle_s: float) -> tuple[dict, dict]:
        prefix = f"bench/{self.mode}/daemon"
        cfg = self.cfg(prefix, root)
        repo = self.repo(cfg)
        store, head_key = repo.store, cfg.layout.head
        proc, log = self.sidecar(root, prefix, "bench", "master", {"STATESYNC_DEBOUNCE": str(debounce)})
        files = tree_files(root)
        try:
            index, deadline = 0, time.monotonic() + 180
            while True:
                index, pair = store.wait(head_key, index, 5)
                if pair is not None:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the sidecar made no first commit: {log.read_text()[-2000:]}")
            say(f"  [{self.mode}] daemon: first commit of {len(files)} files done")
            latencies = []
            for i in range(writes):
                rel = self.rng.choice(files)
                content = os.urandom(self.plan["file_size"])
                digest = chunking.sha256(content)
                t0 = time.monotonic()
                with open(root / rel, "wb") as fh:
                    fh.write(content)
                while True:
                    index, pair = store.wait(head_key, index, 10)
                    seen = time.monotonic()
                    rec = decode_record(pair.value)
                    entry = repo.manifest(rec).by_path().get(rel)
                    if entry is not None and entry.sha256 == digest:
                        latencies.append(seen - t0)
                        break
                    if seen - t0 > 60:
                        raise RuntimeError(f"write {i} of {rel} not committed within 60 s")
                time.sleep(self.rng.uniform(0.02, 0.1))
            p50, p99 = median(latencies), pctl(latencies, 0.99)
            say(f"  [{self.mode}] daemon latency over {writes} writes: p50 {p50:.3f}s p99 {p99:.3f}s")
            lat = {"writes": writes, "tree_files": len(files), "debounce_s": debounce, "p50_s": _r(p50),
                   "p99_s": _r(p99), "max_s": _r(max(latencies)), "min_s": _r(min(latencies)),
                   "goal_p99_s": _r(debounce + GOALS["latency_extra_s"]),
                   "met": p99 <= debounce + GOALS["latency_extra_s"]}
            # Idle: let the last commit settle, then measure the process over idle_s.
            time.sleep(min(3.0, idle_s))
            head_before = store.get(head_key).modify_index
            cpu0, t0 = proc_cpu_s(proc.pid), time.monotonic()
            time.sleep(idle_s)
            cpu1, t1 = proc_cpu_s(proc.pid), time.monotonic()
            cpu_pct = 100.0 * (cpu1 - cpu0) / (t1 - t0)
            rss, hwm = proc_status(proc.pid, "VmRSS"), proc_status(proc.pid, "VmHWM")
            idle = {"seconds": _r(t1 - t0, 1), "tree_files": len(files), "cpu_percent": _r(cpu_pct, 3),
                    "cpu_seconds": _r(cpu1 - cpu0, 3), "rss_mb": _r(rss / MIB, 1), "peak_rss_mb": _r(hwm / MIB, 1),
                    "commits_while_idle": int(store.get(head_key).modify_index != head_before),
                    "goal_cpu_percent": GOALS["idle_cpu_pct"], "goal_rss_mb": GOALS["idle_rss_mb"],
                    "met": cpu_pct < GOALS["idle_cpu_pct"] and rss / MIB < GOALS["idle_rss_mb"]}
            say(f"  [{self.mode}] idle over {t1 - t0:.0f}s: {cpu_pct:.3f}% CPU, RSS {rss / MIB:.1f} MB "
                f"(peak {hwm / MIB:.1f} MB)")
        finally:
            code = self.stop(proc)
        if code != 0:
            raise RuntimeError(f"the sidecar exited with {code}: {log.read_text()[-2000:]}")
        self.drop(prefix)
        return lat, idle

    # -- the satellite's CA guard ------------------------------------------------------------

    def fig_guard(self, label: str, rounds: int, settings: dict) -> dict:
        from tests.certs import enrol, make_ca
        from tests.guardkit import publish
        base = self.work / f"guard-{self.mode}-{label}"
        root, marker = base / "root", base / "fired"
        root.mkdir(parents=True)
        prefix = f"bench/{self.mode}/guard-{label}"
        cfg = self.cfg(prefix, root)
        store, key = Store(cfg.consul), cfg.layout.ca
        ca = make_ca()
        enrol(root, ca)
        publish(store, key, ca)
        env = {"STATESYNC_GUARD_TRIGGER": "command",
               "STATESYNC_GUARD_COMMAND": json.dumps(["/bin/sh", "-c", 'date +%s.%N >> "$0"', str(marker)]),
               "STATESYNC_GUARD_PURGE_WINDOW": "0"}
        for name, value in settings.items():
            env[f"STATESYNC_GUARD_{name.upper()}"] = str(value)
        proc, log = self.sidecar(root, prefix, "sat1", "satellite", env)

        def fired() -> int:
            try:
                return len(marker.read_text().splitlines())
            except FileNotFoundError:
                return 0

        def checked(cert_sha: str) -> bool:
            for line in log.read_text().splitlines():
                if '"CA check"' in line and cert_sha in line:
                    return True
            return False

        latencies = []
        try:
            deadline = time.monotonic() + 60
            while not checked(fingerprint.cert_sha256(ca.pem)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the satellite never checked the CA: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            for i in range(rounds):
                enrol(root, ca)  # enrolled again, with the CA now published
                new = make_ca()
                time.sleep(0.3)
                t0 = time.monotonic()
                publish(store, key, new)
                while fired() < i + 1:
                    if time.monotonic() - t0 > 60 or proc.poll() is not None:
                        raise RuntimeError(f"guard round {i}: no trigger within 60 s: {log.read_text()[-2000:]}")
                    time.sleep(0.002)
                latencies.append(time.monotonic() - t0)
                ca = new
        finally:
            code = self.stop(proc)
        if code != 0:
            raise RuntimeError(f"the satellite exited with {code}: {log.read_text()[-2000:]}")
        self.drop(prefix)
        p50, p99 = median(latencies), pctl(latencies, 0.99)
        say(f"  [{self.mode}] guard {label} {settings or '(defaults)'}: p50 {p50:.3f}s p99 {p99:.3f}s "
            f"over {rounds} rounds")
        from statesync.guard.settings import DEFAULTS
        used = {"confirmations": settings.get("confirmations", DEFAULTS.confirmations),
                "confirm_interval_s": settings.get("confirm_interval", DEFAULTS.confirm_interval),
                "purge_window_s": 0, "trigger": "command (/bin/sh appending to a file)"}
        return {"settings": used, "rounds": rounds, "p50_s": _r(p50), "p99_s": _r(p99), "max_s": _r(max(latencies)),
                "reps_s": [_r(x, 3) for x in latencies], "goal_p99_s": GOALS["guard_p99_s"],
                "met": p99 < GOALS["guard_p99_s"]}


FIGURES = ("backup", "restore", "guard", "daemon", "icinga-state")
# Icinga 2 state dumps (bench/icinga_bench.py) against a server of their own, once, not per mode.
ICINGA_FIXTURES = {"quick": ["S"], "full": ["S", "L"]}
GROUPS = (*FIGURES, *suites.NAMES)


def run_mode(mode: str, consul_bin: str, work: Path, plan: dict, trees: dict, only=FIGURES) -> dict:
    agent = ConsulAgent(consul_bin, dev=(mode == "dev"), workdir=str(work / f"consul-{mode}"))
    say(f"== {mode}: starting Consul ({'dev agent, in memory' if mode == 'dev' else 'single server, raft on disk'})")
    agent.start(timeout=60)
    out: dict = {"consul": "dev agent (-dev, in memory)" if mode == "dev" else
                 "single server (-server -bootstrap-expect 1, -data-dir on disk)"}
    try:
        b = Bench(agent, mode, work, plan, consul_bin)
        if "backup" in only:
            out["backup"] = {
                "a": b.fig_backup("a", trees["a"], plan["backup_reps"]),
                "b": b.fig_backup("b", trees["b"], plan["backup_reps"]),
                "c": b.fig_backup("c", trees["c"], plan["big_reps"]),
            }
        if "restore" in only:
            out["incremental"], out["raft"], out["restore"] = b.fig_incremental_and_restore(
                trees["b"], plan["incremental"], plan["restore_reps"])
        if "guard" in only:
            out["guard"] = {"default": b.fig_guard("default", plan["guard_default_rounds"], {}),
                            "tuned": b.fig_guard("tuned", plan["guard_tuned_rounds"], GUARD_TUNED)}
        if "daemon" in only:
            out["daemon_latency"], out["idle"] = b.fig_daemon(trees["b"], plan["writes"], plan["debounce"],
                                                              plan["idle_s"])
    finally:
        agent.stop()
    return out


# -- the report -------------------------------------------------------------------------

def _s(x):
    return "–" if x is None else (f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s")


def _ok(m) -> str:
    return "yes" if m else "**no**"


def rows(report: dict) -> list[tuple[str, dict, str, str]]:
    """(figure, {mode: text}, goal, met on the headline mode)."""
    modes = report["modes"]
    head = modes.get("server") or next(iter(modes.values()))
    out = []

    def cell(fn):
        return {m: fn(v) for m, v in modes.items()}

    for key, label in (("a", "(a) 1,000 × 4 KiB"), ("b", "(b) 10,000 × 4 KiB"), ("c", "(c) one 20 MiB file")):
        if report["quick"]:
            label = f"({key}) {head['backup'][key]['files']} file(s), {head['backup'][key]['bytes']} B"
        out.append((f"initial backup {label}: statesync / raw limit = ratio",
                    cell(lambda v, k=key: f"{_s(v['backup'][k]['statesync_s'])} / {_s(v['backup'][k]['raw_s'])} "
                                          f"= **{v['backup'][k]['ratio']:.2f}**"),
                    f"≤ {GOALS['backup_ratio']}", _ok(head["backup"][key]["met"])))
    out.append(("incremental, one file changed in (b): KV write operations (median, max), time (median)",
                cell(lambda v: f"{v['incremental']['kv_writes_median']:g} ops (max {v['incremental']['kv_writes_max']}: "
                               f"+1 retention delete), {v['incremental']['ms_median']:.1f} ms"),
                f"≤ {GOALS['incremental_ops']} ops, < {GOALS['incremental_ms']:.0f} ms", _ok(head["incremental"]["met"])))
    for where, label in (("disk", "on disk"), ("tmpfs", "on tmpfs")):
        if where not in head["restore"]:
            continue
        out.append((f"restore of (b) into an empty directory {label}: statesync / raw limit = ratio; "
                    "`consul kv export` alone",
                    cell(lambda v, w=where: f"{_s(v['restore'][w]['statesync_s'])} / {_s(v['restore'][w]['raw_s'])} = "
                                            f"**{v['restore'][w]['ratio']:.2f}**; export "
                                            f"{_s(v['restore'][w]['kv_export_s'])}"),
                    f"≤ {GOALS['restore_ratio']}, faster than export", _ok(head["restore"][where]["met"])))
    lat = head["daemon_latency"]
    out.append((f"daemon change-to-committed latency over {lat['writes']} writes, p50 / p99 "
                f"(debounce {lat['debounce_s']} s)",
                cell(lambda v: f"{_s(v['daemon_latency']['p50_s'])} / {_s(v['daemon_latency']['p99_s'])}"),
                f"p99 ≤ {_s(lat['goal_p99_s'])}", _ok(lat["met"])))
    for label in ("default", "tuned"):
        g = head["guard"][label]["settings"]
        out.append((f"guard reaction, {label} settings ({g['confirmations']} confirmations "
                    f"{g['confirm_interval_s']} s apart), p50 / p99",
                    cell(lambda v, g=label: f"{_s(v['guard'][g]['p50_s'])} / {_s(v['guard'][g]['p99_s'])}"),
                    f"p99 < {GOALS['guard_p99_s']:.0f} s", _ok(head["guard"][label]["met"])))
    idle = head["idle"]
    out.append((f"idle sidecar on (b) over {idle['seconds']:.0f} s: CPU, RSS",
                cell(lambda v: f"{v['idle']['cpu_percent']:.3f} %, {v['idle']['rss_mb']:.1f} MB"),
                f"< {GOALS['idle_cpu_pct']} %, < {GOALS['idle_rss_mb']:.0f} MB", _ok(idle["met"])))
    out.append(("Consul's cost per snapshot of (b) after one change: payload sent, raft entries, "
                "bytes Consul wrote to disk",
                cell(lambda v: f"{v['raft']['payload_bytes_median'] / 1024:.0f} KiB, "
                               f"raft entries: {v['raft']['raft_entries_median']:g}, " +
                               (f"{v['raft']['consul_write_bytes_median'] / 1024:.0f} KiB"
                                if v['raft']['consul_write_bytes_median'] is not None else "in memory")),
                "report", "–"))
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    modes = list(report["modes"])
    lines = [f"Run of {report['started']} ({'quick' if report['quick'] else 'full'}, {report['duration_s']:.0f} s): "
             f"{m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}, "
             f"Python {m['python']}, {m['consul_version']}, work directory on {m['workdir_fs']}. "
             f"Load average at start {report['load_start']:.2f}, at end {report['load_end']:.2f}; "
             f"{'other test suites or agents were running: ' + str(len(report['busy'])) if report['busy'] else 'no other test suite or Consul agent was running'}.",
             "",
             "| figure | " + " | ".join(f"{x} ({'headline' if x == 'server' else 'in memory'})" for x in modes)
             + " | goal | met (server) |",
             "|---|" + "---|" * len(modes) + "---|---|"]
    for label, cells, goal, met in rows(report):
        lines.append(f"| {label} | " + " | ".join(cells[x] for x in modes) + f" | {goal} | {met} |")
    if report.get("icinga_state"):
        import icinga_bench
        lines += ["", icinga_bench.markdown(report["icinga_state"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def plain_table(report: dict) -> str:
    modes = list(report["modes"])
    out = []
    for label, cells, goal, met in rows(report):
        out.append(label)
        for x in modes:
            out.append(f"    {x:<7} {cells[x].replace('**', '')}")
        out.append(f"    goal    {goal}  met: {met.replace('**', '')}")
    if report.get("icinga_state"):
        import icinga_bench
        out += ["", icinga_bench.markdown(report["icinga_state"]).replace("**", "").rstrip("\n")]
    return "\n".join(out)


TABLE_BEGIN, TABLE_END = "<!-- bench:begin -->", "<!-- bench:end -->"
README_INTRO = ("`.venv/bin/python bench/run.py` runs every benchmark (about two hours; `--only` for a part, "
                "`--quick` for CI) and measures each figure beside its baseline in the same run, against a real single Consul server (the headline) and a dev agent; "
                "what each figure means, and what limits the goals not met, is in "
                "[docs/BENCH.md](docs/BENCH.md).\n\n")


def update_doc(path: Path, table: str, intro: str = "") -> None:
    """Replace what lies between the markers of ``path`` with ``intro`` and ``table`` (the
    prose around them is kept); a file without the markers gets them at its end."""
    block = f"{TABLE_BEGIN}\n{intro}{table}{TABLE_END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{TABLE_BEGIN}\n{TABLE_END}\n"
    head, sep, rest = text.partition(TABLE_BEGIN)
    if not sep:
        path.write_text(text.rstrip("\n") + "\n\n" + block + "\n")
        return
    _, sep, tail = rest.partition(TABLE_END)
    path.write_text(head + block + (tail if sep else "\n"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one or two repetitions (CI)")
    ap.add_argument("--modes", default="server,dev", help="Consul modes to run, in order (default server,dev)")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/latest.json", help="where to write the JSON")
    ap.add_argument("--markdown", type=Path, default=None, help="where to write the markdown table "
                    "(default: next to the JSON, .md)")
    ap.add_argument("--no-docs", action="store_true", help="a full run: do not update docs/BENCH.json and docs/BENCH.md")
    ap.add_argument("--only", default=",".join(GROUPS),
                    help="groups to measure (a partial run, e.g. for profiling; the table needs all): "
                         + ",".join(GROUPS) + " (restore also gives the incremental and raft figures; "
                         "the last ones are the suites of bench/suites.py, each a script of its own)")
    ap.add_argument("--baseline", default=suites.DEFAULT_BASELINE,
                    help="git ref of the code before, for the suites that compare two versions "
                         f"(default {suites.DEFAULT_BASELINE})")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="measure nothing: rewrite docs/BENCH.md's and README's tables from a full run's JSON")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.only.split(",")) - set(GROUPS))
    if unknown:
        ap.error(f"unknown group(s) {', '.join(unknown)}; the groups are {','.join(GROUPS)}")
    if args.render is not None:
        report = json.loads(args.render.read_text())
        md = markdown(report)
        update_doc(REPO / "docs/BENCH.md", md)
        update_doc(REPO / "README.md", md, README_INTRO)
        print(plain_table(report))
        return 0
    consul_bin = find_consul()
    if consul_bin is None:
        say("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
        return 2
    plan = PLANS["quick" if args.quick else "full"]
    work = Path(tempfile.mkdtemp(prefix="statesync-bench-", dir=args.workdir))
    started = time.monotonic()
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
              "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
              "machine": machine(work, consul_bin), "load_start": os.getloadavg()[0], "busy": busy_processes(),
              "plan": plan, "goals": GOALS, "modes": {}}
    try:
        say(f"building trees in {work}")
        trees = {"a": work / "tree-a", "b": work / "tree-b", "c": work / "tree-c"}
        make_tree(trees["a"], plan["tree_a"], plan["file_size"])
        make_tree(trees["b"], plan["tree_b"], plan["file_size"])
        trees["c"].mkdir()
        (trees["c"] / "big.dat").write_bytes(os.urandom(plan["big"]))
        only = args.only.split(",")
        if set(only) & (set(FIGURES) - {"icinga-state"}):
            for mode in args.modes.split(","):
                report["modes"][mode] = run_mode(mode, consul_bin, work, plan, trees, only)
        if "icinga-state" in only:
            import icinga_bench
            fixtures = ICINGA_FIXTURES["quick" if args.quick else "full"]
            report["icinga_state"] = icinga_bench.run(consul_bin, work, fixtures, say=say)
        for suite in suites.by_name(only):
            report.setdefault("suites", {})[suite.name] = suites.run(suite, args.quick, args.baseline, work, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["load_end"] = os.getloadavg()[0]
    report["busy"] = sorted(set(report["busy"]) | set(busy_processes()))
    if not args.quick and not args.no_docs:
        for name, result in report.get("suites", {}).items():
            suite = suites.by_name([name])[0]
            if suites.update_block(REPO / "docs/BENCH.md", name, suites.render(suite, result)):
                say(f"docs/BENCH.md: rewrote the table of {name}")
    if not set(FIGURES) <= set(args.only.split(",")):
        json_path = args.json
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        if report.get("icinga_state"):
            import icinga_bench
            print(icinga_bench.markdown(report["icinga_state"]))
        for name, result in report.get("suites", {}).items():
            print(f"\n## {name}\n\n" + suites.render(suites.by_name([name])[0], result))
        say(f"partial run: wrote {json_path}" + (", the suites' tables in docs/BENCH.md" if report.get("suites")
                                                and not args.quick and not args.no_docs else " only"))
        return 0
    md = markdown(report)
    targets = [(args.json, args.markdown or args.json.with_suffix(".md"))]
    for json_path, md_path in targets:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        md_path.write_text(md)
    if not args.quick and not args.no_docs:
        (REPO / "docs/BENCH.json").write_text(json.dumps(report, indent=2) + "\n")
        update_doc(REPO / "docs/BENCH.md", md)
        targets.append((REPO / "docs/BENCH.json", REPO / "docs/BENCH.md"))
        readme = REPO / "README.md"
        if TABLE_BEGIN in readme.read_text():
            update_doc(readme, md, README_INTRO)
            targets.append((readme,))
    print(plain_table(report))
    say(f"wrote {', '.join(str(p) for t in targets for p in t)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
