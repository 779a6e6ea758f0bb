#!/usr/bin/env python3
"""What Consul itself costs per Icinga 2 state dump, and what a lost volume costs (issue 26, item 1).

    .venv/bin/python bench/capacity.py                      # S and L, about 20 minutes
    .venv/bin/python bench/capacity.py --quick              # tiny sizes, about a minute

Every run is a fresh single Consul 1.8 server with a data directory (``-server
-bootstrap-expect 1 -data-dir``, not dev mode; a watchdog kills it past --consul-rss-cap) and
``statesync run --role master`` on a root shaped like /var/lib/icinga2 (bench/icinga_bench.py),
with ``keep`` set. After each dump the bench collects the garbage itself, as the sidecar's gc
does (``Repo.collect_garbage``, grace 0, twice: the first marks, the second deletes; the
sidecar's own gc is set to a day, as it writes its gc key at every pass): the steady state of
``keep`` snapshots, without the up to three extra snapshots' worth of chunks that the default
grace (300 s) and interval (600 s) hold a while.
Each dump is written as Icinga 2 writes it (``icinga2.state.tmp.XXXXXX``, fsync, rename).

The dumps: K ticks of bench/icinga_state.py (S = 2k hosts x 10 services, L = 10k x 20) are
generated once (an L tick takes ~16 s to generate, so 50 real L ticks would take 13 minutes);
dump n is tick n mod K with *variant* n div K: two digits inside a number, every 32 KiB, changed
(never a netstring length, never a leading digit), so every chunk of every dump is new, as on a
real node where every record's timestamps change, while each chunk compresses as its tick does.

Per dump, from just before the rename until the head moved and Consul's raft index was quiet
for --quiet seconds (the commit, the prune and the collection of the dropped snapshot's chunks):

- *KV bytes*: the values written (icinga_bench.measure_dump); *raft entries*: the index delta;
- *write_bytes*: Consul's ``/proc/<pid>/io`` write_bytes delta, what it sent to the disk
  (and ``wchar``, what its write() calls passed);
- *raft.db*: the growth of data/raft/raft.db; *snapshots*: bytes of the Consul snapshots
  (data/raft/snapshots/*) that appeared; BoltDB's freelist read from the file's meta page;
- Consul's VmRSS, RssAnon, RssFile (BoltDB's mmap of raft.db) and VmHWM after it.

Runs: ``keep`` 1, 10 and 50 at each fixture, each for the same number of dumps (53 at S;
--l-dumps, 18, at L, where keep 50's memory at 53 dumps is extrapolated linearly from the
run's last half, a method checked against the real 53 at S, from its first 18); txn / chunk /
Consul settings at S and a few of them at L (--settings-fixtures, --l-settings), each on its
own Consul, beside plain PUTs of random values (Consul alone); the sidecar's start-up restore
on an empty root until its ready marker exists (--rto-reps times, at each fixture, after the
keep 1 run). The sizing table is linear in the
objects of the two fixtures (hosts x (1 + services)), per 1,000 hosts of 20 services each.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import structlog

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import dump_cost  # noqa: E402
import icinga_bench  # noqa: E402
import icinga_state  # noqa: E402

from statesync import config  # noqa: E402
from statesync.disk import READY_FILE  # noqa: E402
from statesync.sidecar.wiring import open_repo  # noqa: E402
from tests.support import ConsulAgent, clean_env, find_consul  # noqa: E402

KIB, MIB, GIB = 1024, 1024 * 1024, 1024 ** 3
NODE = "capacity"
DUMPS_PER_DAY = 24 * 60 // 5
PATCH_STEP = 32 * KIB
SERVICES_PER_HOST = 20  # the sizing table's host: L's shape
# Run inside the sidecar's interpreter: the txn body limit is not a setting (Consul's own 512 KiB
# decides it), so the bench sets the dataclass default that config.load leaves in place.
WRAPPER = """
import runpy, sys
from statesync.consul import settings
body = int(sys.argv.pop(1))
init = settings.ConsulSettings.__init__
names = init.__code__.co_varnames[1:init.__code__.co_argcount]
d = list(init.__defaults__)
d[names.index("txn_max_body") - (len(names) - len(d))] = body
init.__defaults__ = tuple(d)
sys.argv[0] = "statesync"
runpy.run_module("statesync", run_name="__main__", alter_sys=True)
"""
DEFAULT = {"chunk_size": 352 * KIB, "txn_max_ops": 64, "txn_max_body": 480 * KIB, "consul_hcl": ()}
SETTINGS = {
    "default (352 KiB chunks, 64 ops, 480 KiB body)": {},
    "chunk 256 KiB": {"chunk_size": 256 * KIB},
    "chunk 128 KiB": {"chunk_size": 128 * KIB},
    "txn body 240 KiB": {"txn_max_body": 240 * KIB},
    "txn 8 ops": {"txn_max_ops": 8},
    # Scaled down so that a few dumps cross it: what 16384 and 10240 do to a server over a day.
    "Consul raft_snapshot_threshold 16, trailing_logs 16": {
        "consul_hcl": ("raft_snapshot_threshold = 16", "raft_trailing_logs = 16", 'raft_snapshot_interval = "1s"')},
}
# What Consul 1.8 uses when the agent's configuration leaves them at 0 (agent/consul/config.go:
# SnapshotInterval 30 s, SnapshotThreshold 16384; hashicorp/raft's DefaultConfig: TrailingLogs 10240).
RAFT_DEFAULTS = {"RaftSnapshotThreshold": 16384, "RaftSnapshotInterval": "30s", "RaftTrailingLogs": 10240}
_PATCHABLE = re.compile(rb"[0-9]{4,}(?=[^0-9:])")  # inside a number; a netstring length ends in ':'


def _say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- the dumps ----------------------------------------------------------------------------------

def patch_points(path: Path) -> list[tuple[int, int, int]]:
    """Per PATCH_STEP of the file, the position of two interior digits of a number and their values."""
    points = []
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        for off in range(0, size, PATCH_STEP):
            fh.seek(off)
            m = _PATCHABLE.search(fh.read(4096))
            if m:
                p = off + m.start() + 1
                points.append((p, m.group()[1] - 48, m.group()[2] - 48))
    return points


def write_dump(base: Path, points: list, variant: int, state: Path) -> float:
    """``base`` with ``variant`` written over its patch points, as Icinga 2's AtomicFile writes a dump."""
    fd, tmp = tempfile.mkstemp(prefix=state.name + ".tmp.", dir=state.parent)
    i, off = 0, 0
    with os.fdopen(fd, "wb") as out, open(base, "rb") as src:
        os.fchmod(out.fileno(), 0o600)
        while block := bytearray(src.read(4 * MIB)):
            while variant and i < len(points) and points[i][0] + 1 < off + len(block):
                p, d1, d2 = points[i]
                block[p - off] = 48 + (d1 + variant % 10) % 10
                block[p - off + 1] = 48 + (d2 + variant // 10) % 10
                i += 1
            out.write(block)
            off += len(block)
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, state)
    return time.perf_counter()


# -- Consul's side ------------------------------------------------------------------------------

def bolt_freelist(path: Path) -> dict:
    """The free pages of a BoltDB file and the pages its freelist takes (written on every commit)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            page = struct.unpack_from("<I", head, 24)[0]
            metas = []
            for n in (0, 1):
                fh.seek(n * page + 16)
                magic, _ver, _ps, _fl, _root, _seq, free_pg, hwm, txid = struct.unpack("<IIIIQQQQQ", fh.read(56))
                if magic == 0xED0CDAED:
                    metas.append((txid, free_pg, hwm))
            _txid, free_pg, hwm = max(metas)
            fh.seek(free_pg * page)
            _id, flags, count, overflow = struct.unpack("<QHHI", fh.read(16))
            if count == 0xFFFF:
                count = struct.unpack("<Q", fh.read(8))[0]
            if not flags & 0x10:
                return {}
            return {"page_size": page, "free_pages": count, "freelist_pages": overflow + 1, "high_water_pages": hwm}
    except (OSError, ValueError, struct.error):
        return {}


class Consul:
    def __init__(self, consul_bin: str, work: Path, cap: int, hcl=()):
        extra = [a for line in hcl for a in ("-hcl", line)]
        self.agent = ConsulAgent(consul_bin, dev=False, workdir=str(work / "consul"), extra=extra)
        self.agent.start(timeout=60)
        self.pid = self.agent.proc.pid
        self.watchdog = icinga_bench.Watchdog(self.pid, cap)
        self.kv = icinga_bench.Kv(self.agent.addr)
        self.raft = work / "consul" / "data" / "raft"
        cfg = json.loads(self.kv.raw.call("GET", "/v1/agent/self"))["DebugConfig"]
        self.raft_config = {k: cfg.get(k) if cfg.get(k) not in (0, "0s", None) else v for k, v in RAFT_DEFAULTS.items()}

    def sample(self) -> dict:
        snaps = {}
        for d in (self.raft / "snapshots").glob("*"):
            snaps[d.name] = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        db = self.raft / "raft.db"
        io = {k: int(v) for k, v in (ln.split(": ") for ln in Path(f"/proc/{self.pid}/io").read_text().splitlines())}
        st = {k: icinga_bench.proc_status(self.pid, k) for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")}
        return {"t": time.perf_counter(), "index": self.kv.raft_index(), "write_bytes": io["write_bytes"],
                "wchar": io["wchar"],
                "raft_db": db.stat().st_size, "snapshots": snaps, **st, "bolt": bolt_freelist(db)}

    def quiet(self, seconds: float, limit: float = 120.0) -> None:
        """Wait until the raft index stayed the same for ``seconds`` (the sidecar's commit and gc done)."""
        deadline, last, since = time.monotonic() + limit, -1, time.monotonic()
        while time.monotonic() < deadline:
            idx = self.kv.raft_index()
            if idx != last:
                last, since = idx, time.monotonic()
            elif time.monotonic() - since >= seconds:
                return
            time.sleep(0.2)

    def stop(self) -> None:
        self.watchdog.stop()
        self.kv.raw.close()
        self.agent.stop()


def wait_head(consul: Consul, key: str, modified: int, timeout: float) -> tuple[int, float]:
    """Block until the head key itself was written after ``modified`` (a KV GET's X-Consul-Index is
    the whole KV table's: any key's write, the sidecar's lock or gc key among them, moves it)."""
    deadline, index = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        index, seen = dump_cost.wait_head(consul.agent.addr, key, index, deadline - time.monotonic())
        pair = consul.kv.pair(key)
        if pair is not None and pair["ModifyIndex"] > modified:
            return pair["ModifyIndex"], seen
    raise RuntimeError(f"no new head within {timeout:.0f} s")


def delta(a: dict, b: dict) -> dict:
    new_snaps = {k: v for k, v in b["snapshots"].items() if k not in a["snapshots"]}
    return {"raft_entries": b["index"] - a["index"], "write_bytes": b["write_bytes"] - a["write_bytes"],
            "wchar": b["wchar"] - a["wchar"],
            "raft_db_growth": b["raft_db"] - a["raft_db"], "snapshots_taken": len(new_snaps),
            "snapshot_bytes": sum(new_snaps.values()),
            "snapshots_dir": sum(b["snapshots"].values()) - sum(a["snapshots"].values()),
            **{k.lower(): b[k] for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")},
            "raft_db": b["raft_db"], "bolt": b["bolt"]}


# -- one run: a Consul, a sidecar, N dumps --------------------------------------------------------

def sidecar(env: dict, body: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-c", WRAPPER, str(body), "run", "--role", "master"], env=env,
                                cwd=str(REPO), stdout=fh, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def one_run(label: str, ticks: list, dumps: int, keep: int, settings: dict, a: argparse.Namespace, work: Path,
            rto_reps: int = 0) -> dict:
    s = {**DEFAULT, **settings}
    base = work / f"run-{label}".replace(" ", "_")
    root = base / "var-lib-icinga2"
    icinga_bench.make_root(root)
    state = root / icinga_state.STATE_FILE
    write_dump(ticks[0][0], ticks[0][1], 0, state)
    consul = Consul(a.consul_bin, base, a.consul_rss_cap, s["consul_hcl"])
    prefix = "capacity"
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE=NODE, STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true",
               STATESYNC_KEEP=str(keep), STATESYNC_GC_INTERVAL="86400", STATESYNC_GC_GRACE="0",
               STATESYNC_CHUNK_SIZE=str(s["chunk_size"]), STATESYNC_CONSUL_TXN_MAX_OPS=str(s["txn_max_ops"]),
               PYTHONPATH=str(REPO))
    node_root = f"{prefix}/nodes/{NODE}/"
    chunks, head_key = node_root + "chunks/", node_root + "head"
    out = {"label": label, "keep": keep, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
           "raft_config": consul.raft_config, "dumps": [], "capped": False}
    proc = sidecar(env, s["txn_max_body"], base / "sidecar.log")
    repo = open_repo(config.load(env=env))
    try:
        index, _ = wait_head(consul, head_key, 0, a.timeout)
        consul.quiet(a.quiet)
        idle = consul.sample()
        before = icinga_bench._node_keys(consul.kv, node_root, chunks)
        time.sleep(a.quiet)
        m0 = consul.sample()
        out["idle_write_bytes_per_s"] = round((m0["write_bytes"] - idle["write_bytes"]) / (m0["t"] - idle["t"]))
        for n in range(1, dumps + 1):
            tick, points = ticks[n % len(ticks)]
            m0 = consul.sample()
            renamed = write_dump(tick, points, n // len(ticks), state)
            index, seen = wait_head(consul, head_key, index, a.timeout)
            consul.quiet(a.quiet)
            repo.collect_garbage(0.0)
            repo.collect_garbage(0.0)
            m1 = consul.sample()
            kv = icinga_bench.measure_dump(consul.kv, node_root, chunks, before, m0["index"])
            before = kv.pop("after")
            row = {"dump": n, "rename_to_head_s": round(seen - renamed, 3), "kv_bytes": kv["bytes_written"],
                   "new_chunks": kv["new_chunks"], "keys_deleted": kv["keys_deleted"], "chunk_keys": len(before[0]),
                   **delta(m0, m1)}
            row["amplification"] = round(row["write_bytes"] / max(1, row["kv_bytes"]), 2)
            out["dumps"].append(row)
            _say(f"  [{label}] dump {n}: KV {row['kv_bytes'] / MIB:.1f} MiB in {row['raft_entries']} entries, "
                 f"write_bytes {row['write_bytes'] / MIB:.1f} MiB (x{row['amplification']}), raft.db "
                 f"+{row['raft_db_growth'] / MIB:.1f} MiB, snapshots {row['snapshots_taken']}, "
                 f"RSS {row['vmrss'] / MIB:.0f} MiB (file {row['rssfile'] / MIB:.0f})")
            if consul.watchdog.killed:
                out["capped"] = True
                break
        stop(proc)
        if rto_reps and not consul.watchdog.killed:
            out["rto"] = rto(env, state, base, rto_reps, a.timeout)
    finally:
        if proc.poll() is None:
            stop(proc)
        out["peak_rss"] = consul.watchdog.peak
        out["capped"] = out["capped"] or consul.watchdog.killed
        consul.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


def rto(env: dict, state: Path, base: Path, reps: int, timeout: float) -> dict:
    """``statesync run --role master`` on an empty root: the seconds until its ready marker exists."""
    want = icinga_bench.sha256_file(state)
    times = []
    for rep in range(reps):
        root = base / f"lost-{rep}"
        root.mkdir()
        os.sync()
        time.sleep(0.3)
        t0 = time.perf_counter()
        proc = sidecar({**env, "STATESYNC_ROOT": str(root)}, DEFAULT["txn_max_body"], base / f"rto-{rep}.log")
        ready = root / READY_FILE
        try:
            while not ready.exists():
                if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"no ready marker: {(base / f'rto-{rep}.log').read_text()[-2000:]}")
                time.sleep(0.02)
            times.append(round(time.perf_counter() - t0, 3))
        finally:
            stop(proc)
        if icinga_bench.sha256_file(root / icinga_state.STATE_FILE) != want:
            raise RuntimeError("the restored state file differs from the last dump")
        shutil.rmtree(root)
        _say(f"  ready after {times[-1]:.2f} s (restored, identical)")
    return {"seconds": statistics.median(times), "all_s": times}


def raw_puts(a: argparse.Namespace, work: Path, sizes: list[int], n: int) -> dict:
    """Consul's own amplification, no statesync: ``n`` plain PUTs of random values per size."""
    consul = Consul(a.consul_bin, work / "raw", a.consul_rss_cap)
    out = {}
    try:
        for size in sizes:
            consul.quiet(1.0)
            m0 = consul.sample()
            for i in range(n):
                consul.kv.raw.call("PUT", f"/v1/kv/raw/{size}/{i}", os.urandom(size))
            consul.quiet(1.0)
            d = delta(m0, consul.sample())
            out[str(size)] = {"puts": n, "raft_entries": d["raft_entries"], "write_bytes": d["write_bytes"],
                              "wchar": d["wchar"],
                              "amplification": round(d["write_bytes"] / (n * size), 2),
                              "raft_db_growth": d["raft_db_growth"]}
            _say(f"  raw PUTs of {size // KIB} KiB: x{out[str(size)]['amplification']}")
    finally:
        consul.stop()
        shutil.rmtree(work / "raw", ignore_errors=True)
    return out


# -- summaries ----------------------------------------------------------------------------------

def _med(rows: list, key: str):
    vals = [r[key] for r in rows]
    return statistics.median(vals) if vals else None


def _fit_at(rows: list, key: str, at: int) -> float:
    """``key`` at dump ``at``, by a least-squares line through the last half of ``rows``."""
    pts = [(r["dump"], r[key]) for r in rows[len(rows) // 2:]]
    if len(pts) < 2:
        return float(pts[-1][1])
    mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return my + slope * (at - mx)


def summarise(run: dict, wanted: int) -> dict:
    rows = run["dumps"]
    bolt = [r["bolt"] for r in rows if r["bolt"]]
    last = rows[-1]
    out = {"dumps": len(rows), "kv_bytes": _med(rows, "kv_bytes"), "raft_entries": _med(rows, "raft_entries"),
           "write_bytes": _med(rows, "write_bytes"), "amplification": _med(rows, "amplification"),
           "raft_db_growth": _med(rows, "raft_db_growth"), "raft_db_end": last["raft_db"],
           "snapshots_taken": sum(r["snapshots_taken"] for r in rows),
           "snapshot_bytes": sum(r["snapshot_bytes"] for r in rows),
           "write_bytes_per_entry": statistics.median(r["write_bytes"] / max(1, r["raft_entries"]) for r in rows),
           "kv_bytes_per_entry": statistics.median(r["kv_bytes"] / max(1, r["raft_entries"]) for r in rows),
           "freelist_pages": bolt[-1]["freelist_pages"] if bolt else None,
           "free_pages": bolt[-1]["free_pages"] if bolt else None,
           "vmrss": last["vmrss"], "rssanon": last["rssanon"], "rssfile": last["rssfile"], "vmhwm": last["vmhwm"],
           "extrapolated": len(rows) < wanted, "capped": run["capped"]}
    if out["extrapolated"] and not run["capped"]:
        for k in ("vmrss", "rssanon", "rssfile"):
            out[k] = round(_fit_at(rows, k, wanted))
    return out


def sizing(report: dict) -> dict:
    """Per 1,000 hosts of 20 services: the slope of each figure between the two fixtures, in objects."""
    res = report["results"]
    fx = [f for f in res if "keep" in res[f]]
    figures = {}
    for f in fx:
        hosts, services = icinga_state.FIXTURES[f]
        r = res[f]
        d = r["keep"].get("10") or next(iter(r["keep"].values()))
        fig = {"objects": hosts * (1 + services), "kv_per_day": d["kv_bytes"] * DUMPS_PER_DAY,
               "written_per_day": d["write_bytes"] * DUMPS_PER_DAY}
        fig.update({f"rss_keep_{k}": v["vmrss"] for k, v in r["keep"].items()})
        if "rto" in r:
            fig["rto_s"] = r["rto"]["seconds"]
        figures[f] = fig
    out = {"figures": figures}
    if len(fx) >= 2:
        a, b = figures[fx[0]], figures[fx[-1]]
        per_k = 1000 * (1 + SERVICES_PER_HOST)
        out["per_1k_hosts"], out["fixed"] = {}, {}
        for k in a:
            if k != "objects" and k in b:
                slope = (b[k] - a[k]) / (b["objects"] - a["objects"])
                out["per_1k_hosts"][k] = slope * per_k
                out["fixed"][k] = a[k] - slope * a["objects"]
    return out


# -- tables ---------------------------------------------------------------------------------------

def _mb(x) -> str:
    return "–" if x is None else f"{x / 1e6:,.1f} MB"


def markdown(report: dict) -> str:
    res = report["results"]
    lines = ["Per dump, `keep` 10 (the default; else the first `keep` run), medians; *written* is Consul's "
             "`write_bytes`:", "", "| fixture | dumps | KV bytes | raft entries | KV per entry | written | written ÷ KV | written per entry "
             "| raft.db growth | raft.db at end | Consul snapshots | BoltDB freelist |", "|" + "---|" * 12]
    for f, r in res.items():
        s = r["keep"].get("10") or next(iter(r["keep"].values()))
        lines.append(f"| {f} | {s['dumps']} | {_mb(s['kv_bytes'])} | {s['raft_entries']:.0f} | "
                     f"{s['kv_bytes_per_entry'] / KIB:.0f} KiB | {_mb(s['write_bytes'])} | {s['amplification']:.2f}× | "
                     f"{s['write_bytes_per_entry'] / KIB:.0f} KiB | {_mb(s['raft_db_growth'])} | {_mb(s['raft_db_end'])} "
                     f"| {s['snapshots_taken']} ({_mb(s['snapshot_bytes'])}) | {s['freelist_pages']} page(s), "
                     f"{s['free_pages']} free |")
    rc = next(iter(res.values()))["raft_config"]
    lines += ["", f"Consul's raft settings in these runs: {', '.join(f'{k} {v}' for k, v in rc.items())}.", "",
              "Consul's memory after the last dump, by `keep` (RssFile is BoltDB's mmap of raft.db):", "",
              "| fixture | keep | dumps | VmRSS | of it RssAnon | RssFile | VmHWM |", "|---|---|---|---|---|---|---|"]
    for f, r in res.items():
        for k, s in r["keep"].items():
            note = " (extrapolated)" if s["extrapolated"] else ""
            note += " (**capped: killed**)" if s["capped"] else ""
            hwm = f"{s['vmhwm'] / MIB:,.0f} MiB" + (f" (at dump {s['dumps']})" if s["extrapolated"] else "")
            lines.append(f"| {f} | {k} | {s['dumps']} | {s['vmrss'] / MIB:,.0f} MiB{note} | {s['rssanon'] / MIB:,.0f} MiB "
                         f"| {s['rssfile'] / MIB:,.0f} MiB | {hwm} |")
        if "check" in r:
            c = r["check"]
            lines.append(f"| {f} | {c['keep']}, extrapolated from {c['from_dumps']} dumps as at L | | "
                         f"{c['extrapolated'] / MIB:,.0f} MiB (measured {c['measured'] / MIB:,.0f}) | | | |")
    for f, r in res.items():
        if "settings" not in r:
            continue
        base = next(iter(r["settings"].values()))
        lines += ["", f"statesync's and Consul's settings at {f} (`keep` 10, one Consul each, medians per dump):", "",
                  "| setting | KV bytes | raft entries | written | written ÷ KV | raft.db growth | written ÷ default |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in r["settings"].items():
            lines.append(f"| {name} | {_mb(s['kv_bytes'])} | {s['raft_entries']:.0f} | {_mb(s['write_bytes'])} | "
                         f"{s['amplification']:.2f}× | {_mb(s['raft_db_growth'])} | "
                         f"{s['write_bytes'] / base['write_bytes']:.2f} |")
        raw = r.get("raw_puts", {})
        lines += [f"| Consul alone: plain PUTs of {int(k) // KIB} KiB ({v['puts']}) | {_mb(v['puts'] * int(k))} | "
                  f"{v['raft_entries']} | {_mb(v['write_bytes'])} | {v['amplification']:.2f}× | "
                  f"{_mb(v['raft_db_growth'])} | |" for k, v in raw.items()]
    lines += ["", "| fixture | volume lost → ready (start-up restore, median) | each |", "|---|---|---|"]
    for f, r in res.items():
        if "rto" in r:
            lines.append(f"| {f} | {r['rto']['seconds']:.2f} s | {', '.join(f'{t:.2f}' for t in r['rto']['all_s'])} |")
    sz = report.get("sizing", {})
    names = {"rss_keep_1": "Consul RAM, keep 1", "rss_keep_10": "Consul RAM, keep 10", "rss_keep_50": "Consul RAM, keep 50",
             "kv_per_day": "KV written per day (a dump every 5 min)", "written_per_day": "Consul disk writes per day",
             "rto_s": "volume lost → ready"}
    fx = list(sz.get("figures", {}))
    lines += ["", "| sizing | " + " | ".join(f"{f} measured" for f in fx) + " | fixed part | per 1,000 hosts |",
              "|---|" + "---|" * (len(fx) + 2)]
    for k, name in names.items():
        if not all(k in sz["figures"][f] for f in fx):
            continue
        fmt = (lambda x: f"{abs(x) if abs(x) < 0.05 else x:.1f} s") if k == "rto_s" else (
            (lambda x: f"{x / MIB:,.0f} MiB") if k.startswith("rss") else (lambda x: f"{x / 1e9:,.2f} GB"))
        per = sz.get("per_1k_hosts", {})
        lines.append(f"| {name} | " + " | ".join(fmt(sz["figures"][f][k]) for f in fx) + " | "
                     + (f"{fmt(sz['fixed'][k])} | {fmt(per[k])} |" if k in per else "– | – |"))
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------------

def gen_ticks(fixture: str, k: int, seed: int, into: Path) -> list:
    hosts, services = icinga_state.FIXTURES[fixture]
    out = []
    for tick in range(k):
        path = into / f"{fixture}-tick{tick}.state"
        t0 = time.perf_counter()
        icinga_state.dump(path, hosts, services, seed, tick)
        _say(f"  generated {fixture} tick {tick}: {path.stat().st_size / 1e6:.1f} MB in "
             f"{time.perf_counter() - t0:.1f} s")
        out.append((path, patch_points(path)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default="S,L")
    ap.add_argument("--keeps", default="1,10,50")
    ap.add_argument("--ticks", type=int, default=4, help="real ticks generated per fixture (default 4)")
    ap.add_argument("--l-dumps", type=int, default=18,
                    help="dumps per run at L (default 18); what keep 50 reaches later is extrapolated")
    ap.add_argument("--settings-fixtures", default="S,L")
    ap.add_argument("--l-settings", default="0,1,3", help="the settings measured at L, by position (default 0,1,3)")
    ap.add_argument("--settings-dumps", type=int, default=5)
    ap.add_argument("--settings", default="", help="which settings, by position in SETTINGS (default all)")
    ap.add_argument("--rto-reps", type=int, default=3)
    ap.add_argument("--quiet", type=float, default=1.0, help="seconds of an unchanged raft index that end a dump")
    ap.add_argument("--consul-rss-cap", type=int, default=6 * GIB)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: every figure once, under a minute")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/capacity.json")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory on a real disk (default /tmp)")
    a = ap.parse_args(argv)
    # A stopped bench stops its Consul agents and sidecars too (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # The bench's own gc passes (Repo.collect_garbage) log at info: keep its output to the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if a.quick:
        a.fixtures, a.keeps, a.ticks, a.settings_fixtures, a.settings_dumps, a.rto_reps = "tiny", "1", 2, "tiny", 2, 1
    a.consul_bin = find_consul()
    if a.consul_bin is None:
        _say("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
        return 2
    settings = dict(list(SETTINGS.items())[:2]) if a.quick else SETTINGS
    if a.settings:
        settings = {k: v for i, (k, v) in enumerate(SETTINGS.items()) if str(i) in a.settings.split(",")}
    work = Path(tempfile.mkdtemp(prefix="statesync-capacity-", dir=a.workdir))
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["bench/capacity.py", *(argv if argv is not None else sys.argv[1:])]),
              "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                       text=True).stdout.strip(),
              "cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "results": {}}
    try:
        for f in a.fixtures.split(","):
            _say(f"== {f}")
            ticks = gen_ticks(f, a.ticks, a.seed, work)
            r = report["results"][f] = {"file_bytes": ticks[0][0].stat().st_size, "keep": {}, "runs": []}
            keeps = [int(k) for k in a.keeps.split(",")]
            # The same number of dumps at every keep: Consul's memory also grows with what it wrote
            # (its raft log cache holds the last 512 entries), not only with what it keeps.
            wanted = max(keeps) + (1 if a.quick else 3)
            for keep in keeps:
                dumps = min(wanted, a.l_dumps) if f == "L" else wanted
                run = one_run(f"{f}-keep{keep}", ticks, dumps, keep, {}, a, work,
                              rto_reps=a.rto_reps if keep == 1 else 0)
                r["runs"].append(run)
                # Extrapolated only where the run stopped before its keep was reached.
                r["keep"][str(keep)] = summarise(run, wanted if keep + 3 > len(run["dumps"]) else len(run["dumps"]))
                r["raft_config"] = run["raft_config"]
                if "rto" in run:
                    r["rto"] = run["rto"]
                if keep == max(keeps) and len(run["dumps"]) == wanted > a.l_dumps:
                    part = {**run, "dumps": run["dumps"][:a.l_dumps]}
                    r["check"] = {"keep": keep, "from_dumps": a.l_dumps, "measured": run["dumps"][-1]["vmrss"],
                                  "extrapolated": summarise(part, wanted)["vmrss"]}
            if f in a.settings_fixtures.split(","):
                r["settings"] = {}
                chosen = a.l_settings.split(",") if f == "L" else None
                for i, (name, s) in enumerate(settings.items()):
                    if chosen is not None and str(i) not in chosen:
                        continue
                    run = one_run(f"{f}-{name[:20]}", ticks, a.settings_dumps, 10, s, a, work)
                    r["runs"].append(run)
                    r["settings"][name] = summarise(run, a.settings_dumps)
                if f == a.settings_fixtures.split(",")[0]:
                    r["raw_puts"] = raw_puts(a, work, [8 * KIB, 64 * KIB, 352 * KIB], 10 if a.quick else 40)
            for path, _ in ticks:
                path.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["sizing"] = sizing(report)
    report["load_at_end"] = os.getloadavg()
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    a.json.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
