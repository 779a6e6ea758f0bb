#!/usr/bin/env python3
"""Icinga 2 state dumps through `statesync backup` against a real Consul server (issue 17).

    .venv/bin/python bench/icinga_bench.py --fixtures S          # about a minute
    .venv/bin/python bench/icinga_bench.py --fixtures S,L        # L: a 340 MB state file, ~10 min
    .venv/bin/python bench/run.py --only icinga-state --no-docs  # the same group inside run.py

For each fixture (bench/icinga_state.py: S = 2,000 hosts x 10 services, L = 10,000 x 20) a
fresh single Consul server (raft on disk, free loopback ports, stopped by pid) and a root
shaped like /var/lib/icinga2: icinga2.state plus a small ca/ and certs/. Then: one initial
`statesync backup`, N ticks (S 5, L 3) each dumped as Icinga 2 dumps it (AtomicFile:
icinga2.state.tmp.XXXXXX, fsync, rename) and followed by a `statesync backup`, finally a
`statesync restore` into an empty directory, checked byte for byte. Every statesync run is
its own process: its peak RSS is its own (``wait4`` rusage ``ru_maxrss``).

Per dump:
- *bytes written*: the sizes of the KV values the dump wrote, read back from Consul after it:
  the chunk keys that were not there before (``?keys`` listings before and after, each new
  value fetched with ``?raw``) plus the node's other keys (head, snapshot records, gc) whose
  ``ModifyIndex`` moved past the raft index taken before the dump. Keys gone are deletes.
  A chunk re-sent under a key that already existed would not be counted (statesync skips
  the chunks its head references; a rewrite of one shows up as a raft entry, not here).
- *raft entries*: the delta of ``Stats.raft.last_log_index`` (``/v1/agent/self``) around the
  backup; Consul's own background entries over the same time are measured while idle
  (``raft_idle_entries_per_s``) and are not subtracted.
- *KV operations*: new chunk keys + other keys modified + keys deleted.
- bytes per day at a 5-minute cadence: bytes per dump x 288.
Plus Consul's peak RSS (``VmHWM`` of its pid) and, as the restore's yardstick, one recursive
GET (``Accept-Encoding: identity``, JSON + base64 decoding, bench/raw.py) of exactly the bytes
the head snapshot references, copied to a prefix of their own beforehand.

A watchdog kills Consul above --consul-rss-cap (default 12 GiB) and every statesync process
after --timeout seconds: the run always ends by itself.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
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

import icinga_state  # noqa: E402
import raw as rawlib  # noqa: E402

from tests.support import ConsulAgent, clean_env, find_consul, statesync_cmd  # noqa: E402

MIB = 1024 * 1024
TICKS = {"tiny": 2, "S": 5, "L": 3}
DUMPS_PER_DAY = 24 * 60 // 5
GOAL_RESTORE_OVER_GET = 2.0
NODE = "icinga-bench"


def _say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def proc_status(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def vm_hwm(pid: int) -> int:
    """VmHWM of a live process; 0 once it has exited (a zombie has no memory to report)."""
    try:
        return proc_status(pid, "VmHWM")
    except (OSError, ValueError):
        return 0


def make_root(root: Path) -> None:
    """The small part of /var/lib/icinga2 beside the state file: a CA and a node's certificates."""
    for d in ("ca", "certs", "api/zones", "api/packages"):
        (root / d).mkdir(parents=True, exist_ok=True)
    pem = "-----BEGIN CERTIFICATE-----\n" + "MIIFfzCCA2egAwIBAgIUbench0000000000000000000000000000000000000\n" * 28 \
          + "-----END CERTIFICATE-----\n"
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIJKAIBAAKCAgEAbench0000000000000000000000000000000000000\n" * 50 \
        + "-----END RSA PRIVATE KEY-----\n"
    files = {"ca/ca.crt": pem, "ca/ca.key": key, "certs/ca.crt": pem, "certs/master1.example.com.crt": pem,
             "certs/master1.example.com.key": key, "certs/master1.example.com.csr": pem,
             "api/zones/master/_etc/hosts.conf": "object Host \"h\" { check_command = \"hostalive\" }\n"}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        os.chmod(root / rel, 0o600 if rel.endswith(".key") else 0o644)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 * MIB):
            h.update(block)
    return h.hexdigest()


class Watchdog:
    """Samples Consul's RSS; kills it above ``cap`` bytes so that a runaway run ends."""

    def __init__(self, pid: int, cap: int):
        self.pid, self.cap, self.peak, self.killed = pid, cap, 0, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            try:
                rss = proc_status(self.pid, "VmRSS")
            except OSError:
                return
            self.peak = max(self.peak, rss)
            if rss > self.cap:
                self.killed = True
                os.kill(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def run_statesync(args: list[str], env: dict, timeout: float) -> dict:
    """One statesync process: wall time, its own peak RSS, its output; killed after ``timeout``.

    The peak is the largest VmHWM read from /proc while it runs, not wait4's ru_maxrss: Linux
    folds the high-water mark of the memory a child had before exec, a copy of this (large)
    process, into ru_maxrss, which then reports the parent's size."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(statesync_cmd(*args), env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    peak = [0]
    done = threading.Event()

    def watch_rss() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], vm_hwm(proc.pid))

    watcher = threading.Thread(target=watch_rss, daemon=True)
    watcher.start()
    out_chunks: dict[str, bytes] = {}

    def drain(name, stream):
        out_chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s)) for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    _, status, _usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    timer.cancel()
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = out_chunks.get("out", b"").decode(errors="replace"), out_chunks.get("err", b"").decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"statesync {' '.join(args)} exited with {proc.returncode}: {err[-3000:]}")
    return {"seconds": seconds, "peak_rss": peak[0], "stdout": out.strip(), "stderr": err}


class Kv:
    """What the bench reads of Consul, over one keep-alive connection (bench/raw.py)."""

    def __init__(self, addr: str):
        self.raw = rawlib.RawConsul(addr, timeout=600)

    def raft_index(self) -> int:
        return int(json.loads(self.raw.call("GET", "/v1/agent/self"))["Stats"]["raft"]["last_log_index"])

    def keys(self, prefix: str) -> set[str]:
        try:
            return set(json.loads(self.raw.call("GET", f"/v1/kv/{prefix}?keys")))
        except RuntimeError as exc:
            if " 404:" in str(exc):
                return set()
            raise

    def value(self, key: str) -> bytes:
        return self.raw.call("GET", f"/v1/kv/{key}?raw")

    def pair(self, key: str) -> dict | None:
        try:
            return json.loads(self.raw.call("GET", f"/v1/kv/{key}"))[0]
        except RuntimeError as exc:
            if " 404:" in str(exc):
                return None
            raise


def _node_keys(kv: Kv, node_root: str, chunks: str) -> tuple[set[str], dict[str, int]]:
    """The chunk keys, and the other keys of the node with their ModifyIndex."""
    keys = kv.keys(node_root)
    chunk_keys = {k for k in keys if k.startswith(chunks)}
    meta = {}
    for k in sorted(keys - chunk_keys):
        p = kv.pair(k)
        if p is not None:
            meta[k] = p["ModifyIndex"]
    return chunk_keys, meta


def measure_dump(kv: Kv, node_root: str, chunks: str, before: tuple, idx0: int) -> dict:
    chunks0, meta0 = before
    chunks1, meta1 = _node_keys(kv, node_root, chunks)
    new_chunks = chunks1 - chunks0
    chunk_bytes = sum(len(kv.value(k)) for k in sorted(new_chunks))
    changed_meta = [k for k, idx in meta1.items() if idx > idx0]
    meta_bytes = sum(len(kv.value(k)) for k in changed_meta)
    deleted = (chunks0 - chunks1) | (set(meta0) - set(meta1))
    return {"bytes_written": chunk_bytes + meta_bytes, "chunk_bytes": chunk_bytes, "meta_bytes": meta_bytes,
            "new_chunks": len(new_chunks), "meta_keys_written": sorted(k[len(node_root):] for k in changed_meta),
            "keys_deleted": len(deleted), "kv_ops": len(new_chunks) + len(changed_meta) + len(deleted),
            "snapshot_records_added": sum(1 for k in set(meta1) - set(meta0) if "/snapshots/" in k),
            "after": (chunks1, meta1)}


def get_baseline(addr: str, cfg_env: dict, scratch_prefix: str) -> dict:
    """Copy exactly the head snapshot's chunk values to a prefix of their own, then time one
    recursive GET of that prefix (the raw limit of a restore's reading)."""
    from statesync import config
    from statesync.sidecar.wiring import open_repo
    cfg = config.load({}, env=cfg_env)
    repo = open_repo(cfg)
    refs = sorted(repo.refs(repo.head().record))
    kv = Kv(addr)
    batch, size, total = [], 0, 0
    for digest in refs:
        value = kv.value(cfg.layout.chunk(digest))
        batch.append((f"{scratch_prefix}/{digest}", value))
        size += len(value)
        total += len(value)
        if size > 32 * MIB:
            rawlib.upload(kv.raw, batch)
            batch, size = [], 0
    if batch:
        rawlib.upload(kv.raw, batch)
    os.sync()
    time.sleep(0.2)
    t0 = time.perf_counter()
    values = rawlib.download(kv.raw, scratch_prefix + "/")
    seconds = time.perf_counter() - t0
    got = sum(len(v) for v in values.values())
    del values
    kv.raw.delete_tree(scratch_prefix + "/")
    kv.raw.close()
    return {"seconds": seconds, "keys": len(refs), "bytes": total, "bytes_read": got,
            "statesync_compression": getattr(cfg, "compression", None)}


def manifest_paths(cfg_env: dict) -> list[str]:
    from statesync import config
    from statesync.sidecar.wiring import open_repo
    cfg = config.load({}, env=cfg_env)
    repo = open_repo(cfg)
    return sorted(e.path for e in repo.manifest(repo.head().record).entries)


def run_fixture(fixture: str, consul_bin: str, work: Path, seed: int, ticks: int, timeout: float,
                rss_cap: int, say=_say) -> dict:
    hosts, services = icinga_state.FIXTURES[fixture]
    base = work / f"icinga-{fixture}"
    root, target = base / "var-lib-icinga2", base / "restored"
    make_root(root)
    state = root / icinga_state.STATE_FILE
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(base / "consul"))
    say(f"== icinga-state {fixture}: {hosts} hosts x {services} services, {ticks} ticks; starting Consul")
    agent.start(timeout=60)
    dog = Watchdog(agent.proc.pid, rss_cap)
    prefix = f"bench-icinga/{fixture}"
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root), STATESYNC_NODE=NODE,
               STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    cfg_env = {k: v for k, v in env.items() if k.startswith(("CONSUL_", "STATESYNC_"))}
    node_root, chunks = f"{prefix}/nodes/{NODE}/", f"{prefix}/nodes/{NODE}/chunks/"
    kv = Kv(agent.addr)
    out: dict = {"fixture": fixture, "hosts": hosts, "services_per_host": services, "ticks": ticks, "seed": seed}
    try:
        idx = kv.raft_index()
        time.sleep(3.0)
        out["raft_idle_entries_per_s"] = round((kv.raft_index() - idx) / 3.0, 3)
        dumps = []
        before = _node_keys(kv, node_root, chunks)
        for tick in range(ticks + 1):
            t0 = time.perf_counter()
            written = icinga_state.dump(state, hosts, services, seed, tick)
            gen_s = time.perf_counter() - t0
            os.sync()
            if tick == 0:
                out["state_file_bytes"] = written["bytes"]
                out["objects"] = written["objects"]
                out["zlib_ratio"] = round(icinga_state.zlib_ratio(state), 2)
            idx0 = kv.raft_index()
            res = run_statesync(["backup"], env, timeout)
            idx1 = kv.raft_index()
            m = measure_dump(kv, node_root, chunks, before, idx0)
            before = m.pop("after")
            row = {"tick": tick, "kind": "initial" if tick == 0 else "tick", "file_bytes": written["bytes"],
                   "generate_s": round(gen_s, 3), "backup_s": round(res["seconds"], 3),
                   "backup_peak_rss": res["peak_rss"], "raft_entries": idx1 - idx0, **m,
                   "ratio_written_to_file": round(m["bytes_written"] / written["bytes"], 4),
                   "bytes_per_day": m["bytes_written"] * DUMPS_PER_DAY,
                   "consul_rss": proc_status(agent.proc.pid, "VmRSS"), "statesync_says": res["stdout"]}
            dumps.append(row)
            say(f"  [{fixture}] dump {tick}: file {written['bytes'] / MIB:.1f} MiB, backup {res['seconds']:.2f} s, "
                f"RSS {res['peak_rss'] / MIB:.0f} MiB, wrote {m['bytes_written'] / MIB:.2f} MiB "
                f"({row['ratio_written_to_file']:.3f} of the file) in {m['kv_ops']} KV ops, "
                f"{row['raft_entries']} raft entries; statesync: {res['stdout'][-160:]}")
        out["dumps"] = dumps
        paths = manifest_paths(cfg_env)
        out["snapshot_files"] = len(paths)
        out["temp_files_in_snapshot"] = [p for p in paths if ".tmp" in os.path.basename(p)]
        # The same bytes through one recursive GET: the restore's yardstick.
        out["recursive_get"] = get_baseline(agent.addr, cfg_env, f"bench-icinga-get/{fixture}")
        # Python's start and statesync's imports, paid by every run: the restore's share of it.
        out["process_start_s"] = round(statistics.median(
            run_statesync(["--version"], env, 60)["seconds"] for _ in range(3)), 3)
        renv = {**env, "STATESYNC_ROOT": str(target)}
        os.sync()
        time.sleep(0.2)
        res = run_statesync(["restore"], renv, timeout)
        same = sha256_file(target / icinga_state.STATE_FILE) == sha256_file(state)
        out["restore"] = {"seconds": round(res["seconds"], 3), "peak_rss": res["peak_rss"], "identical": same,
                          "statesync_says": res["stdout"],
                          "over_recursive_get": round(res["seconds"] / out["recursive_get"]["seconds"], 3),
                          "net_over_recursive_get": round((res["seconds"] - out["process_start_s"])
                                                          / out["recursive_get"]["seconds"], 3),
                          "goal_over_recursive_get": GOAL_RESTORE_OVER_GET}
        say(f"  [{fixture}] restore {res['seconds']:.2f} s, RSS {res['peak_rss'] / MIB:.0f} MiB, identical: {same}; "
            f"recursive GET of the same {out['recursive_get']['bytes'] / MIB:.1f} MiB: "
            f"{out['recursive_get']['seconds']:.2f} s")
        # A dump killed half-way leaves its temp file (AtomicFile unlinks it only on an orderly exit).
        stale = root / f"{icinga_state.STATE_FILE}.tmp.Xk3b9Q"
        stale.write_bytes(state.read_bytes()[: 4 * MIB])
        run_statesync(["backup"], env, timeout)
        out["stale_tmp_file_backed_up"] = stale.name in manifest_paths(cfg_env)
        stale.unlink()
        out["consul_peak_rss"] = proc_status(agent.proc.pid, "VmHWM")
        raft_db = base / "consul" / "data" / "raft" / "raft.db"
        out["consul_raft_db_bytes"] = raft_db.stat().st_size if raft_db.exists() else None
    finally:
        dog.stop()
        kv.raw.close()
        agent.stop()
        if dog.killed:
            raise RuntimeError(f"Consul passed {rss_cap / MIB:.0f} MiB RSS and was killed")
        shutil.rmtree(base, ignore_errors=True)
    ticks_only = [d for d in out["dumps"] if d["kind"] == "tick"] or out["dumps"]

    def med(key):
        return statistics.median(d[key] for d in ticks_only)

    out["summary"] = {
        "file_bytes": out["state_file_bytes"], "zlib_ratio": out["zlib_ratio"],
        "initial_bytes_written": out["dumps"][0]["bytes_written"],
        "tick_bytes_written": med("bytes_written"), "tick_ratio_written_to_file": med("ratio_written_to_file"),
        "tick_bytes_per_day": med("bytes_per_day"), "tick_kv_ops": med("kv_ops"),
        "tick_raft_entries": med("raft_entries"), "tick_backup_s": med("backup_s"),
        "initial_backup_s": out["dumps"][0]["backup_s"],
        "backup_peak_rss": max(d["backup_peak_rss"] for d in out["dumps"]),
        "restore_s": out["restore"]["seconds"], "restore_peak_rss": out["restore"]["peak_rss"],
        "recursive_get_s": round(out["recursive_get"]["seconds"], 3),
        "restore_over_get": out["restore"]["over_recursive_get"],
        "restore_net_over_get": out["restore"]["net_over_recursive_get"], "process_start_s": out["process_start_s"],
        "consul_peak_rss": out["consul_peak_rss"]}
    return out


def run(consul_bin: str, work: Path, fixtures: list[str], seed: int = 1, timeout: float = 900.0,
        rss_cap: int = 12 * 1024 * MIB, say=_say) -> dict:
    out = {}
    for fixture in fixtures:
        out[fixture] = run_fixture(fixture, consul_bin, work, seed, TICKS[fixture], timeout, rss_cap, say)
    return out


def _mb(x) -> str:
    return f"{x / 1e6:,.1f} MB" if x >= 1e6 else f"{x / 1e3:,.1f} kB"


def _s(x) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def markdown(results: dict) -> str:
    fixtures = list(results)
    rows = [
        ("state file (objects; zlib -6 ratio)",
         lambda r: f"{_mb(r['state_file_bytes'])} ({r['objects']:,}; {r['zlib_ratio']:.1f}×)"),
        ("initial backup: time; bytes written to Consul",
         lambda r: f"{_s(r['summary']['initial_backup_s'])}; {_mb(r['summary']['initial_bytes_written'])}"),
        ("per dump (median over the ticks): backup time",
         lambda r: _s(r["summary"]["tick_backup_s"])),
        ("per dump: bytes written to Consul (ratio to the file)",
         lambda r: f"{_mb(r['summary']['tick_bytes_written'])} ({r['summary']['tick_ratio_written_to_file']:.3f})"),
        ("per dump: KV operations; raft entries",
         lambda r: f"{r['summary']['tick_kv_ops']:g}; {r['summary']['tick_raft_entries']:g}"),
        ("Consul bytes per day at one dump every 5 minutes (×288)",
         lambda r: f"{r['summary']['tick_bytes_per_day'] / 1e9:,.2f} GB"),
        ("peak RSS: backup (max over dumps); restore; Consul",
         lambda r: "; ".join(f"{r['summary'][k] / MIB:,.0f} MiB"
                             for k in ("backup_peak_rss", "restore_peak_rss", "consul_peak_rss"))),
        ("restore into an empty directory / one recursive GET of the same bytes = ratio (goal ≤ 2)",
         lambda r: f"{_s(r['summary']['restore_s'])} / {_s(r['summary']['recursive_get_s'])} = "
                   f"**{r['summary']['restore_over_get']:.2f}** ({r['summary']['restore_net_over_get']:.2f} without "
                   f"the process start, {_s(r['summary']['process_start_s'])})"),
    ]
    head = "| Icinga 2 state dumps | " + " | ".join(
        f"{f}: {results[f]['hosts']:,} hosts × {results[f]['services_per_host']} services, "
        f"{results[f]['ticks']} ticks" for f in fixtures) + " |"
    lines = [head, "|---|" + "---|" * len(fixtures)]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(fn(results[f]) for f in fixtures) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default="S", help="comma-separated: tiny, S, L (default S)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/icinga-state.json")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a statesync process is killed")
    ap.add_argument("--consul-rss-cap", type=float, default=12.0, help="GiB of Consul RSS before it is killed")
    args = ap.parse_args(argv)
    consul_bin = find_consul()
    if consul_bin is None:
        _say("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="statesync-icinga-bench-", dir=args.workdir))
    started = time.monotonic()
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["bench/icinga_bench.py", *(argv if argv is not None else sys.argv[1:])])}
    try:
        report["results"] = run(consul_bin, work, args.fixtures.split(","), args.seed, args.timeout,
                                int(args.consul_rss_cap * 1024 * MIB))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report["results"])
    args.json.with_suffix(".md").write_text(md)
    print(md)
    _say(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
