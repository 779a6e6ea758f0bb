"""The daemon's periodic jobs (full rescan, garbage collection) are apscheduler jobs on the
daemon's own scheduler; each only asks, and the main loop does the work, never beside a commit."""
from __future__ import annotations

import threading
import time

import pytest

from statesync.sidecar.daemon import Daemon

from ..support import wait_for

pytestmark = pytest.mark.consul


def test_gc_and_full_rescans_are_timed_by_the_scheduler_and_run_by_the_main_loop_between_commits(make_cfg,
                                                                                                 repo_for):
    cfg = make_cfg(debounce=0.05, gc_interval=1, gc_grace=0, full_scan_interval=1, lock__enabled="false")
    cfg.root.mkdir(parents=True)
    (cfg.root / "a").write_text("1")
    daemon = Daemon(cfg, repo_for(cfg))
    events: list[tuple[str, str, float]] = []  # (what, thread, when)
    committing = threading.Lock()
    overlaps = []
    real_commit, real_gc, real_scan = daemon.repo.commit, daemon.repo.collect_garbage, daemon.scanner.scan

    def commit(*args, **kwargs):
        with committing:
            return real_commit(*args, **kwargs)

    def collect_garbage(*args, **kwargs):
        if committing.locked():
            overlaps.append("gc during a commit")
        events.append(("gc", threading.current_thread().name, time.monotonic()))
        return real_gc(*args, **kwargs)

    def scan(known, dirty=None, **kwargs):
        if dirty is None:
            events.append(("full", threading.current_thread().name, time.monotonic()))
        return real_scan(known, dirty, **kwargs)

    daemon.repo.commit, daemon.repo.collect_garbage, daemon.scanner.scan = commit, collect_garbage, scan
    thread = threading.Thread(target=daemon.run, name="daemon-loop", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        wait_for(lambda: daemon.scheduler.running, 60, what="the daemon's scheduler", step=0.01)
        assert {job.id for job in daemon.scheduler.get_jobs()} == {"full", "gc"}
        for n in range(3):  # commits meanwhile: the jobs wait for the loop
            (cfg.root / f"f{n}").write_text(str(n))
            time.sleep(0.4)
        wait_for(lambda: sum(1 for e in events if e[0] == "gc") >= 3 and sum(1 for e in events if e[0] == "full") >= 3,
                 120, what="three GCs and three full rescans", step=0.05)
    finally:
        daemon.stop()
        thread.join(60)
        ran = time.monotonic() - started
    assert not thread.is_alive()
    assert not daemon.scheduler.running
    assert {name for _, name, _ in events} == {"daemon-loop"}, events
    assert not overlaps
    # No busy loop: at most one run of each job per interval (1 s) the daemon ran, and one more
    # for the scheduler's first beat. A loaded machine makes beats late or coalesced, never more.
    for job in ("gc", "full"):
        runs = [at for what, _, at in events if what == job]
        assert len(runs) <= ran + 2, f"{len(runs)} {job} runs in {ran:.1f}s at an interval of 1 s: {runs}"
