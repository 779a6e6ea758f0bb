"""A/B of two checkouts of statesync: backup and chunk reads of the same tree, alternated.

    .venv/bin/python bench/ab.py OLD_CHECKOUT NEW_CHECKOUT [--reps 12] [--files 10000] [--path backup|daemon]

A refactor is judged by its own cost, not by the spread between two full benchmark runs
(which on a 2-core machine exceeds the few per cent in question). Both checkouts run, in
turn and in alternating order, against one real single-server Consul agent (raft on
disk) on loopback: a Repo-level backup of a tree of FILES × 4 KiB files, as `statesync
backup` does it, then a read of every chunk of that snapshot, as a restore does. Each run
is a fresh process importing the checkout under test (PYTHONPATH). Prints every run and
the medians; exits 0.

``--path daemon`` times the sidecar's mirror instead: a Daemon's first sync of the tree into an
empty prefix (its first full scan and commit), then the sync of 1% of the files rewritten
(``Daemon._sync`` with those paths, as the main loop calls it after a burst settles).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.support import ConsulAgent, find_consul  # noqa: E402

# Runs inside the checkout under test; the imports cover the layouts before and after issues 13
# and 24 (the tree reader moved from snapshot/ to tree/).
ONE_RUN = r"""
import sys, time
from pathlib import Path
from statesync import config
try:
    from statesync.consul.store import Store
    from statesync.repo.repository import Repo
    try:
        from statesync.tree.scan import Scanner
    except ImportError:
        from statesync.snapshot.scan import Scanner
except ImportError:
    from statesync.repo import Repo
    from statesync.scan import Scanner
    from statesync.store import Store
addr, root, prefix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
cfg = config.load({"root": str(root), "prefix": prefix, "node": "ab", "consul.addr": [addr], "log.format": "json"},
                  env={})
started = time.perf_counter()
repo = Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)
head = repo.head()
known = set()
try:
    from statesync.repo import backup as pipeline  # the one pipeline, issue 24
except ImportError:
    pipeline = None
if pipeline is not None:
    pipeline.run(repo, Scanner(cfg.root, cfg.path_filter, cfg.chunk_size), head, known, roots=cfg.roots,
                 root=cfg.root, meta={})
else:
    with repo.chunk_stream() as stream:
        scan = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size).scan(known, sink=stream.add)
    repo.commit(scan, head, known, meta={}, sent=stream.sent)
backup = time.perf_counter() - started
started = time.perf_counter()
record = repo.record()
contents = repo.contents(record, repo.manifest(record))
print(f"{backup:.4f} {time.perf_counter() - started:.4f} {len(contents)}")
"""

DAEMON_RUN = r"""
import os, sys, time
from pathlib import Path
from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo
from statesync.sidecar.daemon import Daemon
addr, root, prefix = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
cfg = config.load({"root": str(root), "prefix": prefix, "node": "ab", "consul.addr": [addr], "log.format": "json"},
                  env={})
daemon = Daemon(cfg, Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep))
try:
    started = time.perf_counter()
    daemon._sync("full")
    first = time.perf_counter() - started
    files = sorted(p for p in root.rglob("*") if p.is_file())[::100]
    for p in files:
        p.write_bytes(os.urandom(4096))
    started = time.perf_counter()
    daemon._sync({str(p.relative_to(root)) for p in files})
    again = time.perf_counter() - started
finally:
    if daemon.lock is not None:
        daemon.lock.release()
print(f"{first:.4f} {again:.4f} {daemon.state.commits}")
"""
LABELS = {"backup": ("backup", "chunk read"), "daemon": ("first sync", "1% sync")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--path", choices=sorted(LABELS), default="backup")
    args = ap.parse_args()
    code, (first, second) = (ONE_RUN if args.path == "backup" else DAEMON_RUN), LABELS[args.path]
    work = Path(tempfile.mkdtemp(prefix="statesync-ab-"))
    agent = ConsulAgent(find_consul(), dev=False, workdir=str(work / "consul")).start(timeout=60)
    try:
        tree = work / "tree"
        results: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for rep in range(args.reps):
            for which in (("old", "new") if rep % 2 == 0 else ("new", "old")):
                checkout = getattr(args, which)
                env = {**os.environ, "PYTHONPATH": str(checkout)}
                if rep == 0 or args.path == "daemon":  # the daemon's run rewrites some files
                    _make_tree(tree, args.files)
                out = subprocess.run([sys.executable, "-c", code, agent.addr, str(tree), f"ab/{which}/{rep}"],
                                     env=env, cwd=checkout, capture_output=True, text=True, timeout=600, check=True)
                backup, read, chunks = out.stdout.splitlines()[-1].split()  # the daemon logs above it
                results[which].append((float(backup), float(read)))
                print(f"{which} rep {rep}: {first} {float(backup):.3f}s, {second} {float(read):.3f}s ({chunks})")
        for which, runs in results.items():
            print(f"{which}: {first} median {statistics.median(b for b, _ in runs):.3f}s, "
                  f"{second} median {statistics.median(r for _, r in runs):.3f}s over {len(runs)} runs")
        for n, label in enumerate((first, second)):
            old = statistics.median(run[n] for run in results["old"])
            new = statistics.median(run[n] for run in results["new"])
            print(f"{label} new/old = {new / old:.3f}")
    finally:
        agent.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _make_tree(tree: Path, files: int) -> None:
    """FILES × 4 KiB of random bytes in ten directories, made anew."""
    shutil.rmtree(tree, ignore_errors=True)
    for i in range(files):
        path = tree / f"d{i % 10}" / f"f{i}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(4096))


if __name__ == "__main__":
    sys.exit(main())
