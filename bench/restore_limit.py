#!/usr/bin/env python3
"""A restore of Icinga 2 state against its real limit (issue 26, item 5).

    .venv/bin/python bench/restore_limit.py                         # S and L against main, about 3 minutes
    .venv/bin/python bench/restore_limit.py --quick                 # tiny, no baseline version, under a minute
    .venv/bin/python bench/restore_limit.py --fixtures L --reps 7 --baseline main --profile

For each fixture (bench/icinga_state.py; S 39 MB, L 337 MB of icinga2.state) a root shaped like
/var/lib/icinga2 (the state file, ca/, certs/, api/: icinga_bench.make_root) is backed up with
``statesync backup`` into a fresh single Consul server with its raft log on disk (not dev mode;
a watchdog kills it past --consul-rss-cap). Then, each repetition, every contender in turn (the
order rotates with the repetition; ``os.sync()`` and the previous target removed, untimed,
before each), timed as a process from start to exit:

- *statesync*: ``statesync restore`` of the head into an empty directory on the same disk, this
  working tree's code; *statesync (baseline)*: the same with the --baseline commit's code
  (``git archive``, like bench/dump_cost.py), so before and after come from one run;
- *floor*: the fair local baseline. The head's stored chunks were fetched once beforehand
  (untimed) into one file of zstd frames per restored file (a chunk kept raw because it did not
  compress is stored as a zstd frame of its own). The floor then does the least any restore must:
  one process that, per file in tree order, decompresses (zstandard, the C library statesync
  uses), hashes the whole content once (hashlib's OpenSSL SHA-256) and compares it with the
  manifest's, writes it with ``os.write`` into a new file with its mode and mtime, then one
  ``syncfs`` of the target's filesystem, the durability point statesync uses too. One process
  with the same C libraries is the floor rather than a shell pipeline: ``zstd -d | tee | sha256sum``
  copies every byte through two pipes and starts three processes per file;
- *shell*: that pipeline anyway (``zstd -dc f.zst | tee out | sha256sum`` per file, ``sync -f``),
  as the issue put it;
- *kv export*: ``consul kv export`` of the node's prefix into a file (JSON, base64): what moving
  the same keys out of Consul costs without decompressing, verifying or writing a tree;
- *start*: ``statesync --version``, the interpreter's start and statesync's imports, which every
  restore pays before its first byte: "net of its start" subtracts it, repetition by repetition.

Every Python process runs from compiled bytecode (a cache in the scratch directory), as an installed
statesync does: pip compiles a wheel's modules at install time. A first round of every contender
warms that cache and the page cache and is not counted.
Every restored tree is checked byte for byte against the backed-up root (untimed). Medians over
the repetitions, and the per-repetition ratios statesync ÷ floor and ÷ kv export (their medians).

``--profile``: one more restore per version at the largest fixture, in a process of its own under
cProfile (every thread profiled), with wall timers around its phases (imports, manifest, fetching
and writing the tree, syncfs, the swap); the profile's own time grouped by what it is spent on. A
thread's time in a C call includes waiting for the GIL, so with threads the groups add up to more
than the wall time and say where each thread stood, not what the CPU did.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIB = 1024 * 1024
NODE = "restore-bench"
GOAL_OVER_FLOOR = 1.5


def _say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


# -- the floor: runs in a process of its own, importing only what it needs -------------------

def floor_run(listing: Path, target: Path) -> None:
    """Decompress, hash once, write and sync the tree ``listing`` describes, into ``target``."""
    import ctypes

    import zstandard
    items = json.loads(listing.read_text())
    dctx = zstandard.ZstdDecompressor()
    os.mkdir(target, 0o700)
    dirs = []
    for it in items:
        path = target / it["path"]
        if it["type"] == "dir":
            os.mkdir(path, 0o700)
            dirs.append((path, it))
        elif it["type"] == "symlink":
            os.symlink(it["target"], path)
        else:
            h = hashlib.sha256()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                with open(it["zst"], "rb") as src:
                    reader = dctx.stream_reader(src, read_across_frames=True)
                    while block := reader.read(MIB):
                        h.update(block)
                        view = memoryview(block)
                        while view:
                            view = view[os.write(fd, view):]
                os.fchmod(fd, it["mode"])
                os.utime(fd, ns=(it["mtime_ns"], it["mtime_ns"]))
            finally:
                os.close(fd)
            if h.hexdigest() != it["sha256"]:
                raise SystemExit(f"{it['path']}: content fails its sha256 check")
    for path, it in reversed(dirs):
        os.chmod(path, it["mode"])
        os.utime(path, ns=(it["mtime_ns"], it["mtime_ns"]))
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise SystemExit("syncfs failed")
    finally:
        os.close(fd)


def shell_script(items: list[dict], target: Path) -> str:
    import shlex
    lines = ["set -e -o pipefail", f"mkdir -m 700 {shlex.quote(str(target))}"]
    for it in items:
        path = shlex.quote(str(target / it["path"]))
        if it["type"] == "dir":
            lines.append(f"mkdir -m 700 {path}")
        elif it["type"] == "symlink":
            lines.append(f"ln -s {shlex.quote(it['target'])} {path}")
        else:
            lines.append(f"test \"$(zstd -dcq {shlex.quote(it['zst'])} | tee {path} | sha256sum)\" = "
                         f"{shlex.quote(it['sha256'] + '  -')}")
    lines.append(f"sync -f {shlex.quote(str(target))}")
    return "\n".join(lines) + "\n"


# -- the profile: one restore in a process of its own ----------------------------------------

PHASES = ("imports", "manifest", "fetch + write tree", "syncfs", "swap + rest")


def _group(key: tuple, file: str) -> str:
    name = key[2]
    if "sync_filesystem" == name and file.endswith("fsutil.py"):
        return "syncfs"
    if "openssl_sha256" in name:
        return "SHA-256 per chunk (verify)"
    if "_hashlib.HASH" in name:
        return "SHA-256 per file (update)"
    if "zstandard" in name or "zstd" in name:
        return "zstd"
    if "posix.write" in name:
        return "write(2)"
    if "a2b_base64" in name or "b64decode" in name:
        return "base64"
    if "/json/" in file or "jsonload" in file or "json.decoder" in name:
        return "JSON"
    if "socket" in name or "http/client" in file or "/email/" in file or "transport.py" in file \
            or "ssl" in name or "select" in name:
        return "HTTP"
    if "writeback" in name or "sync_file_range" in name:
        return "start writeback"
    if ("lock" in name or "queue" in name.lower()) and key[0] == "~":
        return "waiting (locks, queues: idle threads)"
    return "other Python"


def profile_run(code: Path, out: Path) -> None:
    """``statesync restore`` (environment as given) under cProfile in every thread, with wall timers."""
    import cProfile
    import pstats
    import threading
    t0 = time.perf_counter()
    sys.path.insert(0, str(code))
    profiles = []

    def start_thread_profile(*_):
        p = cProfile.Profile()
        profiles.append(p)
        sys.setprofile(None)  # this thread's hook only: every thread started later gets one too
        p.enable()

    from statesync.cli.main import main as cli_main
    from statesync.repo.repository import Repo
    from statesync.restore import apply
    walls = {"imports": time.perf_counter() - t0}

    def timed(owner, name, phase):
        inner = getattr(owner, name)

        def wrapper(*args, **kw):
            t = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                walls[phase] = walls.get(phase, 0.0) + time.perf_counter() - t
        setattr(owner, name, wrapper)

    timed(Repo, "manifest", "manifest")
    timed(apply, "write_tree", "write_tree")
    timed(apply, "sync_filesystem", "syncfs")
    main_profile = cProfile.Profile()
    profiles.append(main_profile)
    threading.setprofile(start_thread_profile)
    t1 = time.perf_counter()
    main_profile.enable()
    rc = cli_main(["restore"])
    main_profile.disable()
    total = time.perf_counter() - t1
    threading.setprofile(None)
    if rc != 0:
        raise SystemExit(f"restore exited with {rc}")
    stats = pstats.Stats(main_profile)
    for p in profiles[1:]:
        p.disable()
        stats.add(p)
    groups: dict[str, float] = {}
    for key, (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
        g = _group(key, key[0])
        groups[g] = groups.get(g, 0.0) + tt
    write_tree = walls.pop("write_tree", 0.0)
    sync_in_tree = walls.get("syncfs", 0.0)
    phases = {"imports": walls["imports"], "manifest": walls.get("manifest", 0.0),
              "fetch + write tree": write_tree - sync_in_tree, "syncfs": sync_in_tree}
    phases["swap + rest"] = total - phases["manifest"] - write_tree
    top = sorted(((tt, f"{k[2]} ({Path(k[0]).name}:{k[1]})") for k, (_c, _n, tt, _ct, _cl) in stats.stats.items()),
                 reverse=True)[:12]
    out.write_text(json.dumps({"wall_s": total + walls["imports"], "phases_s": phases, "threads": len(profiles),
                               "profile_s": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
                               "top_tottime": [[round(t, 4), n] for t, n in top]}, indent=2))


# -- the run ----------------------------------------------------------------------------------

def tree_digests(root: Path) -> dict[str, str]:
    """Every entry below ``root``: a file's sha256, a symlink's target, "dir"; statesync's own names left out."""
    import icinga_bench
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".statesync-")]
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            if f.startswith(".statesync-"):
                continue
            p = Path(dirpath, f)
            out[os.path.relpath(p, root)] = ("-> " + os.readlink(p)) if p.is_symlink() else icinga_bench.sha256_file(p)
    return out


def fetch_floor(cfg_env: dict, addr: str, floor: Path) -> tuple[list[dict], int]:
    """The head's stored chunks, fetched once, as one file of zstd frames per file; the listing the
    floor reads, and the stored bytes."""
    import icinga_bench
    import zstandard

    from statesync import config
    from statesync.restore.apply import tree_ordered
    from statesync.sidecar.wiring import open_repo
    from statesync.snapshot import codec
    from statesync.snapshot.manifest import DIR, FILE, SYMLINK
    cfg = config.load({}, env=cfg_env)
    repo = open_repo(cfg)
    manifest = repo.manifest(repo.head().record)
    kv = icinga_bench.Kv(addr)
    floor.mkdir(parents=True)
    items, stored_bytes, first_of = [], 0, {}
    try:
        for i, e in enumerate(tree_ordered(manifest.entries)):
            it = {"path": e.path, "mode": e.mode, "mtime_ns": e.mtime_ns}
            if e.type == DIR:
                it["type"] = "dir"
            elif e.type == SYMLINK:
                it.update(type="symlink", target=e.target)
            elif e.type == FILE:
                it.update(type="file", sha256=e.sha256, zst=str(floor / f"{i}.zst"))
                src = first_of.get(e.link) if e.link else None
                if src is not None:
                    shutil.copyfile(src, it["zst"])
                else:
                    with open(it["zst"], "wb") as out:
                        for d in e.chunks:
                            value = kv.value(cfg.layout.chunk(d))
                            stored_bytes += len(value)
                            if value[:1] == bytes((codec.ZSTD,)) and codec.sha256(value) != d:
                                out.write(value[1:])
                            else:  # raw (or another codec): the same plaintext as a zstd frame
                                plain = codec.decode(value, d, 1 << 30)
                                out.write(zstandard.ZstdCompressor(level=1).compress(plain))
                first_of[e.path] = it["zst"]
            items.append(it)
    finally:
        kv.raw.close()
    return items, stored_bytes


def timed_process(cmd: list[str], env: dict, cwd: Path, timeout: float, stdout=subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=str(cwd), stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited with {res.returncode}: {res.stderr[-2000:]!r}")
    return seconds


def run_fixture(fixture: str, consul_bin: str, work: Path, versions: dict[str, Path], reps: int, timeout: float,
                rss_cap: int, profile: bool, seed: int = 1) -> dict:
    import icinga_bench
    import icinga_state

    from tests.support import ConsulAgent, clean_env
    hosts, services = icinga_state.FIXTURES[fixture]
    base = work / f"restore-{fixture}"
    root, target = base / "var-lib-icinga2", base / "restored"
    icinga_bench.make_root(root)
    state = root / icinga_state.STATE_FILE
    icinga_state.dump(state, hosts, services, seed, 0)
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(base / "consul"))
    agent.start(timeout=60)
    dog = icinga_bench.Watchdog(agent.proc.pid, rss_cap)
    prefix = f"bench-restore/{fixture}"
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE=NODE, STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    # From compiled bytecode, as installed (pip compiles a wheel's modules at install time), not
    # compiling every module at every start as PYTHONDONTWRITEBYTECODE without a cache would; the
    # cache lives in the scratch directory, never beside the sources.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    cfg_env = {k: v for k, v in env.items() if k.startswith(("CONSUL_", "STATESYNC_"))}
    out: dict = {"fixture": fixture, "state_file_bytes": state.stat().st_size}
    try:
        timed_process([sys.executable, "-m", "statesync", "backup"], {**env, "PYTHONPATH": str(REPO)}, REPO, timeout)
        expected = tree_digests(root)
        out["files"] = sum(1 for v in expected.values() if v != "dir")
        out["tree_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        items, out["stored_bytes"] = fetch_floor(cfg_env, agent.addr, base / "floor")
        script = base / "shell.sh"
        script.write_text(shell_script(items, target))
        listing = base / "floor.json"
        listing.write_text(json.dumps(items))
        export_file = base / "export.json"
        cmds = {name: ([sys.executable, "-m", "statesync", "restore"], {**env, "STATESYNC_ROOT": str(target),
                                                                           "PYTHONPATH": str(code)}, code)
                for name, code in versions.items()}
        cmds["floor"] = ([sys.executable, str(Path(__file__).resolve()), "--floor-run", str(listing), str(target)],
                         env, HERE)
        cmds["shell"] = (["bash", str(script)], env, HERE)
        cmds["kv export"] = ([consul_bin, "kv", "export", f"{prefix}/nodes/{NODE}/"], env, HERE)
        cmds["start"] = ([sys.executable, "-m", "statesync", "--version"], {**env, "PYTHONPATH": str(REPO)}, REPO)
        times: dict[str, list[float]] = {name: [] for name in cmds}
        names = list(cmds)
        for rep in range(-1, reps):  # the first round warms the caches (bytecode, pages) and is not counted
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                shutil.rmtree(target, ignore_errors=True)
                export_file.unlink(missing_ok=True)
                os.sync()
                time.sleep(0.2)
                cmd, cenv, cwd = cmds[name]
                if name == "kv export":
                    with open(export_file, "wb") as fh:
                        seconds = timed_process(cmd, cenv, cwd, timeout, stdout=fh)
                    if export_file.stat().st_size < out["stored_bytes"]:
                        raise RuntimeError("kv export wrote less than the chunks it exports")
                elif name == "start":
                    seconds = timed_process(cmd, cenv, cwd, timeout)
                else:
                    seconds = timed_process(cmd, cenv, cwd, timeout)
                    got = tree_digests(target)
                    if got != expected:
                        wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
                        raise RuntimeError(f"{name}: the restored tree differs from the root: {wrong[:5]}")
                if rep >= 0:
                    times[name].append(round(seconds, 4))
            if rep >= 0:
                _say(f"  [{fixture}] rep {rep + 1}/{reps}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names))
        out["times_s"] = times
        out["median_s"] = {n: statistics.median(t) for n, t in times.items()}
        out["ratios"] = {}
        for name in versions:
            for yard in ("floor", "kv export"):
                per_rep = [round(a / b, 3) for a, b in zip(times[name], times[yard], strict=True)]
                out["ratios"][f"{name} ÷ {yard}"] = {"median": statistics.median(per_rep), "per_rep": per_rep}
        # The restore's work without the interpreter's start and statesync's imports, which every run pays.
        per_rep = [round((a - s) / b, 3) for a, s, b in zip(times["statesync"], times["start"], times["floor"],
                                                            strict=True)]
        out["ratios"]["statesync net of its start ÷ floor"] = {"median": statistics.median(per_rep), "per_rep": per_rep}
        if profile:
            out["profile"] = {}
            for name, code in versions.items():
                shutil.rmtree(target, ignore_errors=True)
                os.sync()
                prof = base / "profile.json"
                timed_process([sys.executable, str(Path(__file__).resolve()), "--profile-run", str(code), str(prof)],
                              {**env, "STATESYNC_ROOT": str(target), "PYTHONPATH": str(code)}, code, timeout)
                out["profile"][name] = json.loads(prof.read_text())
        out["consul_peak_rss"] = icinga_bench.proc_status(agent.proc.pid, "VmHWM")
    finally:
        dog.stop()
        agent.stop()
        if dog.killed:
            raise RuntimeError(f"Consul passed {rss_cap / MIB:.0f} MiB RSS and was killed")
        shutil.rmtree(base, ignore_errors=True)
    return out


def markdown(report: dict) -> str:
    lines = ["| fixture | statesync | " + ("statesync (baseline) | " if report.get("baseline") else "")
             + "floor | shell | kv export | statesync's start | statesync ÷ floor | net of its start | "
             "statesync ÷ kv export |"
             + (" baseline ÷ floor |" if report.get("baseline") else ""),
             "|---|---|" + ("---|" if report.get("baseline") else "") + "---|---|---|---|---|---|---|"
             + ("---|" if report.get("baseline") else "")]
    for fixture, res in report["results"].items():
        m, r = res["median_s"], res["ratios"]
        row = [f"{fixture} ({res['state_file_bytes'] / 1e6:.0f} MB, {res['files']} files)", f"{m['statesync']:.3f} s"]
        if report.get("baseline"):
            row.append(f"{m['statesync (baseline)']:.3f} s")
        row += [f"{m['floor']:.3f} s", f"{m['shell']:.3f} s", f"{m['kv export']:.3f} s", f"{m['start']:.3f} s",
                f"{r['statesync ÷ floor']['median']:.2f}", f"{r['statesync net of its start ÷ floor']['median']:.2f}",
                f"{r['statesync ÷ kv export']['median']:.2f}"]
        if report.get("baseline"):
            row.append(f"{r['statesync (baseline) ÷ floor']['median']:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| fixture | ratio | median | per repetition |", "|---|---|---|---|"]
    for fixture, res in report["results"].items():
        for name, r in res["ratios"].items():
            lines.append(f"| {fixture} | {name} | {r['median']:.2f} | {', '.join(f'{x:.2f}' for x in r['per_rep'])} |")
    for fixture, res in report["results"].items():
        profiles = res.get("profile", {})
        if not profiles:
            continue
        names = list(profiles)
        lines += ["", f"{fixture}, one restore per version under cProfile (wall time of the profiled process: "
                  + ", ".join(f"{n} {profiles[n]['wall_s']:.3f} s, {profiles[n]['threads']} thread(s)" for n in names)
                  + "):", "", "| phase (wall) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for phase in PHASES:
            cells = []
            for n in names:
                ph = profiles[n]["phases_s"]
                cells.append(f"{ph.get(phase, 0.0):.3f} s ({100 * ph.get(phase, 0.0) / sum(ph.values()):.0f} %)")
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
        groups = sorted({g for n in names for g in profiles[n]["profile_s"]},
                        key=lambda g: -max(profiles[n]["profile_s"].get(g, 0.0) for n in names))
        lines += ["", "| profile: time in | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for g in groups:
            cells = []
            for n in names:
                pr = profiles[n]["profile_s"]
                cells.append(f"{pr.get(g, 0.0):.3f} s ({100 * pr.get(g, 0.0) / sum(pr.values()):.0f} %)")
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default="S,L", help="comma-separated: tiny, S, L (default S,L)")
    ap.add_argument("--baseline", default="main", help="the commit whose restore is timed beside (default main; "
                                                       "'' for none)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of every contender (default 5)")
    ap.add_argument("--profile", action="store_true", help="profile one restore per version at the last fixture")
    ap.add_argument("--quick", action="store_true", help="tiny fixture, 2 repetitions, no baseline version")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--consul-rss-cap", type=int, default=4 * 1024, help="MiB (default 4096)")
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/restore-limit.json")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: a new one in /tmp)")
    ap.add_argument("--floor-run", nargs=2, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--profile-run", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_run:
        floor_run(*args.floor_run)
        return 0
    if args.profile_run:
        profile_run(*args.profile_run)
        return 0
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import suites  # here, not at the top: the floor's own runs of this script import nothing they need not

    from tests.support import find_consul
    consul_bin = find_consul()
    if consul_bin is None:
        _say("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
        return 2
    if args.quick:
        args.fixtures, args.reps, args.baseline = "tiny", 2, ""
    work = Path(tempfile.mkdtemp(prefix="statesync-restore-bench-", dir=args.workdir))

    def rev(commit: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", commit], check=True, capture_output=True,
                              text=True).stdout.strip()
    report = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["bench/restore_limit.py", *(argv if argv is not None else sys.argv[1:])]),
              "new": rev("HEAD"), "baseline": rev(args.baseline) if args.baseline else None,
              "cpus": os.cpu_count(), "load_at_start": os.getloadavg(), "goal_over_floor": GOAL_OVER_FLOOR,
              "results": {}}
    versions = {"statesync": REPO}
    if args.baseline:
        versions["statesync (baseline)"] = suites.export_code(args.baseline, work / "baseline")
    fixtures = args.fixtures.split(",")
    try:
        for fixture in fixtures:
            _say(f"== {fixture}")
            report["results"][fixture] = run_fixture(fixture, consul_bin, work, versions, args.reps, args.timeout,
                                                     args.consul_rss_cap * MIB, args.profile and fixture == fixtures[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["load_at_end"] = os.getloadavg()
    return suites.write_report(report, args.json, markdown)


if __name__ == "__main__":
    sys.exit(main())
