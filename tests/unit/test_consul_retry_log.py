"""Waiting for Consul is never silent: each failed attempt is a warning at once, with its cause,
the attempt (n/of) and the next delay. Once, 23 seconds passed without a line, even at debug level."""
from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import datetime

import pytest
import structlog.testing

from statesync.consul.store import retry
from statesync.errors import ConsulUnavailable

from ..support import clean_env, statesync_cmd, stop_process, wait_for

CLOSED = "127.0.0.1:1"  # nothing listens on port 1: every attempt is refused at once


def _env(root) -> dict:
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=CLOSED, STATESYNC_ROOT=str(root), STATESYNC_NODE="n1", STATESYNC_LOG_FORMAT="json")
    return env


class _Lines:
    """The lines of a process's pipe, each with the seconds since the process was started."""

    def __init__(self, proc: subprocess.Popen, pipe, started: float):
        self.proc, self.started, self.lines = proc, started, []
        self._reader = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._reader.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def warnings(self) -> list[tuple[float, dict]]:
        found = []
        for at, line in list(self.lines):
            if line.startswith("{") and (event := json.loads(line))["event"] == "Consul unavailable; retrying":
                found.append((at, event))
        return found

    def wait(self, timeout: float) -> float:
        """Wait for the process to exit; return the wall-clock time (time.time()) it was seen to."""
        self.proc.wait(timeout=timeout)
        exited_at = time.time()
        self._reader.join(timeout=30)
        return exited_at


def _start(args, root, log_on_stdout: bool) -> _Lines:
    started = time.monotonic()
    proc = subprocess.Popen(statesync_cmd(*args), env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return _Lines(proc, proc.stdout if log_on_stdout else proc.stderr, started)


def _seconds(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def _assert_logged_before_each_wait(warnings, exited_at: float | None = None) -> None:
    # Order, not speed: each warning is written before the wait it announces, so at least its
    # retry_in lies between it and the next attempt's warning (or, after the last one, the exit).
    # Logged after the wait instead (the old way: the first line 3 s late for backup and restore,
    # 23 s for run), the last warning would come right before the exit. A loaded machine only
    # makes the gaps longer.
    times = [_seconds(w) for _, w in warnings]
    ends = times[1:] + ([exited_at] if exited_at is not None else [])
    for (_, w), at, end in zip(warnings, times, ends, strict=False):
        assert end - at >= w["retry_in"] - 0.01, (
            f"attempt {w['attempt']}: {end - at:.3f}s to the next step, less than its retry_in {w['retry_in']}s")


def _assert_every_attempt(warnings, attempts: int) -> None:
    assert [w["attempt"] for _, w in warnings] == [f"{n}/{attempts}" for n in range(1, attempts)]
    for _, w in warnings:
        assert w["level"] == "warning"
        assert "Consul unreachable at http://127.0.0.1:1" in w["error"]
        assert w["retry_in"] > 0


def test_backup_against_a_closed_port_warns_at_every_attempt_before_waiting(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    out = _start(["backup"], root, log_on_stdout=False)
    exited_at = out.wait(120)
    assert out.proc.returncode == 1
    _assert_every_attempt(out.warnings(), 5)
    _assert_logged_before_each_wait(out.warnings(), exited_at)
    assert "Consul unreachable at http://127.0.0.1:1" in out.lines[-1][1]  # the error, last


def test_restore_against_a_closed_port_warns_at_every_attempt_before_waiting(tmp_path):
    out = _start(["restore"], tmp_path / "root", log_on_stdout=False)
    exited_at = out.wait(120)
    assert out.proc.returncode == 1
    _assert_every_attempt(out.warnings(), 5)
    _assert_logged_before_each_wait(out.warnings(), exited_at)
    assert "Consul unreachable at http://127.0.0.1:1" in out.lines[-1][1]


def test_a_sidecar_starting_without_consul_says_so_at_every_attempt_while_it_still_waits(tmp_path):
    # The sidecar logs to stdout; its eight attempts span about 23 s, so the test stops it after three:
    # three warnings while it still runs are three not held back until it gives up.
    out = _start(["run", "--role", "master"], tmp_path / "root", log_on_stdout=True)
    try:
        wait_for(lambda: len(out.warnings()) >= 3 or out.proc.poll() is not None, 120,
                 what="three warnings from the waiting sidecar", details=lambda: "\n".join(line for _, line in out.lines))
        assert out.proc.poll() is None, "the sidecar gave up before its third attempt"
    finally:
        assert stop_process(out.proc, 10) == 0  # SIGTERM while waiting for Consul: a clean stop
    warnings = out.warnings()
    assert [w["attempt"] for _, w in warnings][:3] == ["1/8", "2/8", "3/8"]
    assert [w["retry_in"] for _, w in warnings][:3] == [0.2, 0.4, 0.8]
    _assert_logged_before_each_wait(warnings[:3])


def test_retry_logs_the_cause_attempt_and_delay_of_each_failure_before_sleeping():
    calls, seen = [], []

    def failing():
        calls.append(1)
        raise ConsulUnavailable(f"Consul unreachable (try {len(calls)})")

    def sleep(seconds):  # by the time it sleeps, the failure it waits after is logged
        seen.append((seconds, len(logs)))

    with structlog.testing.capture_logs() as logs, pytest.raises(ConsulUnavailable, match=r"\(try 3\)"):
        retry(failing, attempts=3, base=0.5, cap=0.75, sleep=sleep)
    assert seen == [(0.5, 1), (0.75, 2)]
    assert [(e["log_level"], e["error"], e["attempt"], e["retry_in"]) for e in logs] == [
        ("warning", "Consul unreachable (try 1)", "1/3", 0.5), ("warning", "Consul unreachable (try 2)", "2/3", 0.75)]
