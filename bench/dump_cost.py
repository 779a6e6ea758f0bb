#!/usr/bin/env python3
"""The cost of one Icinga 2 state dump through the daemon, two versions of statesync side by side
(issue 26, item 3).

    .venv/bin/python bench/dump_cost.py --fixtures S,L --baseline issue-25    # about 10 minutes
    .venv/bin/python bench/dump_cost.py --quick                               # the tiny fixture, no baseline

For each fixture (bench/icinga_state.py) and each round, each version in turn (the baseline
commit, exported with ``git archive``, and this working tree; alternating, so that both see the
same machine): a fresh single Consul server (raft on disk), a root shaped like /var/lib/icinga2,
an initial dump, then ``statesync run --role master`` (default settings) started from that
version's code. It commits the tree; then each tick is dumped the way Icinga 2 dumps it
(``icinga2.state.tmp.XXXXXX``, write, fsync, rename over the state file) and timed:

- *rename → head*: from the rename until a blocking query on the node's head returns a new one;
- *CPU-s*: the daemon's utime + stime (``/proc/<pid>/stat``) from just before the rename until
  the head moved plus 0.3 s (what the daemon does after its commit counts too);
- *bytes*: the sizes of the KV values the dump wrote (new chunk keys and the node's other keys
  whose ModifyIndex moved: ``icinga_bench.measure_dump``).

Finally that version's ``statesync restore`` of the head into an empty directory, timed as a
process and checked byte for byte, ``--restores`` times (the median counts: one restore on a
shared machine varies by 50 %). The ticks' files are generated once, before any timing, and
copied in by each dump, so the dump's own cost is the same for both versions. Medians over the
ticks of all rounds; ratios new ÷ baseline.

*Ceilings* (once per fixture, untimed): what the last tick compresses to, file ÷ bytes, when
each piece is compressed on its own at 256 KiB and 352 KiB (level 1, and 6), with a 110 KiB
dictionary trained on the tick before, as a delta against the same piece of the tick before
(its raw bytes as the dictionary), and as one zstd -1 frame of the whole file: how far per-chunk
compression can go.
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import icinga_bench  # noqa: E402
import icinga_state  # noqa: E402
import suites  # noqa: E402

from tests.support import ConsulAgent, clean_env, find_consul  # noqa: E402

MIB = 1024 * 1024
NODE = "dump-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def icinga_dump(source: Path, state: Path) -> float:
    """Write ``source`` over ``state`` as Icinga 2's AtomicFile does; the time of the rename."""
    fd, tmp = tempfile.mkstemp(prefix=state.name + ".tmp.", dir=state.parent)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        os.fchmod(out.fileno(), 0o600)
        shutil.copyfileobj(src, out, 4 * MIB)
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, state)
    return time.perf_counter()


def wait_head(addr: str, key: str, index: int, timeout: float) -> tuple[int, float]:
    """Block until the head's index passes ``index``; its new index and the time it was seen."""
    host, _, port = addr.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(host, int(port), timeout=90)
        try:
            conn.request("GET", f"/v1/kv/{key}?index={index}&wait=60s")
            resp = conn.getresponse()
            resp.read()
            seen = time.perf_counter()
            new = int(resp.getheader("X-Consul-Index", "0"))
        finally:
            conn.close()
        if resp.status == 200 and new > index:
            return new, seen
    raise RuntimeError(f"no new head within {timeout:.0f} s")


def ceilings(files: list[Path]) -> dict:
    import zstandard
    data, prev = files[-1].read_bytes(), files[-2].read_bytes()

    def cut(blob: bytes, size: int) -> list[bytes]:
        return [blob[i:i + size] for i in range(0, len(blob), size)]

    def ratio(frames) -> float:
        return round(len(data) / sum(1 + len(f) for f in frames), 2)

    out = {}
    for size in (256 * 1024, 352 * 1024):
        pieces, old = cut(data, size), cut(prev, size)
        for level in (1, 6):
            z = zstandard.ZstdCompressor(level=level)
            out[f"{size // 1024} KiB, level {level}"] = ratio(z.compress(p) for p in pieces)
        try:
            trained = zstandard.train_dictionary(110 * 1024, cut(prev, 16 * 1024)[::4])
        except zstandard.ZstdError:  # too few samples (the tiny fixture)
            trained = None
        if trained is not None:
            z = zstandard.ZstdCompressor(level=1, dict_data=trained)
            out[f"{size // 1024} KiB, level 1, dictionary of the tick before"] = ratio(z.compress(p) for p in pieces)
        out[f"{size // 1024} KiB, level 1, delta against the tick before"] = ratio(
            zstandard.ZstdCompressor(level=1, dict_data=zstandard.ZstdCompressionDict(
                old[min(i, len(old) - 1)], dict_type=zstandard.DICT_TYPE_RAWCONTENT)).compress(p)
            for i, p in enumerate(pieces))
    out["whole file, one frame, level 1"] = ratio([zstandard.ZstdCompressor(level=1).compress(data)])
    return out


def one_run(version: str, code: Path, fixture: str, files: list[Path], consul_bin: str, work: Path,
            timeout: float, restores: int, say=_say) -> dict:
    base = work / f"run-{fixture}-{version}"
    root, target = base / "var-lib-icinga2", base / "restored"
    icinga_bench.make_root(root)
    state = root / icinga_state.STATE_FILE
    shutil.copyfile(files[0], state)
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(base / "consul"))
    agent.start(timeout=60)
    prefix = f"bench-dump/{fixture}"
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root), STATESYNC_NODE=NODE,
               STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true", PYTHONPATH=str(code))
    node_root, chunks = f"{prefix}/nodes/{NODE}/", f"{prefix}/nodes/{NODE}/chunks/"
    head_key = node_root + "head"
    kv = icinga_bench.Kv(agent.addr)
    log = base / "sidecar.log"
    proc = None
    out: dict = {"version": version, "fixture": fixture, "dumps": []}
    try:
        with open(log, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "statesync", "run", "--role", "master"], env=env,
                                    cwd=str(code), stdout=fh, stderr=subprocess.STDOUT)
        index, _ = wait_head(agent.addr, head_key, 0, timeout)
        time.sleep(1.0)
        before = icinga_bench._node_keys(kv, node_root, chunks)
        for tick, source in enumerate(files[1:], 1):
            os.sync()
            time.sleep(0.5)
            idx0 = kv.raft_index()
            cpu0 = cpu_s(proc.pid)
            renamed = icinga_dump(source, state)
            index, seen = wait_head(agent.addr, head_key, index, timeout)
            time.sleep(0.3)
            cpu1 = cpu_s(proc.pid)
            m = icinga_bench.measure_dump(kv, node_root, chunks, before, idx0)
            before = m.pop("after")
            size = source.stat().st_size
            row = {"tick": tick, "file_bytes": size, "rename_to_head_s": round(seen - renamed, 3),
                   "cpu_s": round(cpu1 - cpu0, 3), "bytes_written": m["bytes_written"],
                   "file_over_bytes": round(size / m["bytes_written"], 2), "new_chunks": m["new_chunks"]}
            out["dumps"].append(row)
            say(f"  [{fixture} {version}] tick {tick}: rename→head {row['rename_to_head_s']:.2f} s, "
                f"CPU {row['cpu_s']:.2f} s, wrote {m['bytes_written'] / MIB:.2f} MiB (1/{row['file_over_bytes']})")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    try:
        renv = {**env, "STATESYNC_ROOT": str(target)}
        times = []
        for _ in range(restores):
            shutil.rmtree(target, ignore_errors=True)
            os.sync()
            time.sleep(0.3)
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-m", "statesync", "restore"], env=renv, cwd=str(code),
                                 capture_output=True, timeout=timeout)
            times.append(round(time.perf_counter() - t0, 3))
            if res.returncode != 0:
                raise RuntimeError(f"restore exited with {res.returncode}: {res.stderr[-2000:]!r}")
            if icinga_bench.sha256_file(target / icinga_state.STATE_FILE) != icinga_bench.sha256_file(files[-1]):
                raise RuntimeError("the restored state file differs from the last dump")
        out["restore"] = {"seconds": statistics.median(times), "all_s": times, "identical": True}
        say(f"  [{fixture} {version}] restores {times} s, identical")
    finally:
        kv.raw.close()
        agent.stop()
        shutil.rmtree(base, ignore_errors=True)
    return out


def summary(runs: list[dict]) -> dict:
    dumps = [d for r in runs for d in r["dumps"]]
    return {"dumps": len(dumps),
            "rename_to_head_s": statistics.median(d["rename_to_head_s"] for d in dumps),
            "cpu_s": statistics.median(d["cpu_s"] for d in dumps),
            "bytes_written": statistics.median(d["bytes_written"] for d in dumps),
            "file_over_bytes": statistics.median(d["file_over_bytes"] for d in dumps),
            "restore_s": statistics.median(r["restore"]["seconds"] for r in runs)}


def markdown(report: dict) -> str:
    lines = ["| fixture | version | dumps | rename → head (median) | daemon CPU-s | bytes per dump (file ÷ bytes) "
             "| restore |", "|---|---|---|---|---|---|---|"]
    for fixture, res in report["results"].items():
        for version, s in res["summary"].items():
            lines.append(f"| {fixture} ({res['file_bytes'] / 1e6:.1f} MB) | {version} | {s['dumps']} | "
                         f"{s['rename_to_head_s']:.2f} s | {s['cpu_s']:.2f} | {s['bytes_written'] / 1e6:.2f} MB "
                         f"(1/{s['file_over_bytes']:.1f}) | {s['restore_s']:.2f} s |")
        if "ratio" in res:
            r = res["ratio"]
            lines.append(f"| {fixture} | new ÷ baseline | | {r['rename_to_head_s']:.2f} | {r['cpu_s']:.2f} | "
                         f"{r['bytes_written']:.3f} | {r['restore_s']:.2f} |")
    for fixture, res in report["results"].items():
        lines += ["", f"| {fixture}: the last tick compressed as | file ÷ bytes |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in res["ceilings"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default="S", help="comma-separated: tiny, S, L (default S)")
    ap.add_argument("--baseline", default="issue-25", help="the commit to compare with (default issue-25; '' for none)")
    ap.add_argument("--quick", action="store_true", help="the tiny fixture, one dump, no baseline: proves every figure "
                    "can be measured (bench/run.py --quick)")
    ap.add_argument("--ticks", type=int, default=3, help="dumps timed per run (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="runs of each version, alternating (default 2)")
    ap.add_argument("--restores", type=int, default=3, help="restores timed per run (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/dump-cost.json")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    args = ap.parse_args(argv)
    if args.quick:
        args.fixtures, args.baseline, args.ticks, args.rounds, args.restores = "tiny", "", 1, 1, 1
    consul_bin = find_consul()
    if consul_bin is None:
        _say("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
        return 2
    work = Path(tempfile.mkdtemp(prefix="statesync-dump-bench-", dir=args.workdir))
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["bench/dump_cost.py", *(argv if argv is not None else sys.argv[1:])]),
              "baseline": args.baseline and subprocess.run(["git", "-C", str(REPO), "rev-parse", args.baseline],
                                                            check=True, capture_output=True, text=True).stdout.strip(),
              "new": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip(),
              "cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "results": {}}
    versions = ({"baseline": suites.export_code(args.baseline, work / "baseline")} if args.baseline else {}) | {"new": REPO}
    try:
        for fixture in args.fixtures.split(","):
            hosts, services = icinga_state.FIXTURES[fixture]
            gen = work / f"gen-{fixture}"
            gen.mkdir()
            files = []
            for tick in range(args.ticks + 1):
                path = gen / f"tick{tick}.state"
                icinga_state.dump(path, hosts, services, args.seed, tick)
                files.append(path)
            _say(f"== {fixture}: {files[0].stat().st_size / 1e6:.1f} MB, {args.ticks} ticks, {args.rounds} rounds")
            runs: dict[str, list] = {v: [] for v in versions}
            for _ in range(args.rounds):
                for version, code in versions.items():
                    runs[version].append(one_run(version, code, fixture, files, consul_bin, work, args.timeout,
                                                 args.restores))
            res = {"file_bytes": files[0].stat().st_size, "runs": runs, "ceilings": ceilings(files),
                   "summary": {v: summary(r) for v, r in runs.items()}}
            if "baseline" in res["summary"]:
                b, n = res["summary"]["baseline"], res["summary"]["new"]
                res["ratio"] = {k: round(n[k] / b[k], 3) for k in ("rename_to_head_s", "cpu_s", "bytes_written",
                                                                     "restore_s")}
            report["results"][fixture] = res
            shutil.rmtree(gen, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_at_end"] = os.getloadavg()
    return suites.write_report(report, args.json, markdown)


if __name__ == "__main__":
    sys.exit(main())
