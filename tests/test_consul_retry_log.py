"""Waiting for Consul is never silent: each failed attempt is a warning at once, with its cause,
the attempt (n/of) and the next delay. Once, 23 seconds passed without a line, even at debug level."""
from __future__ import annotations

import functools
import json
import subprocess
import threading
import time

import pytest
import structlog.testing

from statesync.consul.store import retry
from statesync.errors import ConsulUnavailable

from .support import clean_env, statesync_cmd, stop_process

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

    def wait(self, timeout: float) -> None:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)


def _start(args, root, log_on_stdout: bool) -> _Lines:
    started = time.monotonic()
    proc = subprocess.Popen(statesync_cmd(*args), env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return _Lines(proc, proc.stdout if log_on_stdout else proc.stderr, started)


@functools.cache
def _startup() -> float:
    """Seconds from exec to statesync's modules loaded, on this machine now: the floor under any
    first line (about 0.6 s idle, over 1 s on a loaded CI machine; a third of it is python-consul2
    importing requests), which no retry loop can go below."""
    started = time.monotonic()
    subprocess.run(statesync_cmd("--help"), env=clean_env(), capture_output=True, check=True, timeout=60)
    return time.monotonic() - started


def _assert_soon(first: float) -> None:
    # Within a second of the process being able to say anything: the first failed attempt is
    # logged at once, not after its backoff (old: 3 s for backup and restore, 23 s for run).
    assert first < _startup() + 1.0, f"the first warning came {first:.2f}s after the start (start-up {_startup():.2f}s)"


def _assert_every_attempt(warnings, attempts: int) -> None:
    assert [w["attempt"] for _, w in warnings] == [f"{n}/{attempts}" for n in range(1, attempts)]
    for _, w in warnings:
        assert w["level"] == "warning"
        assert "Consul unreachable at http://127.0.0.1:1" in w["error"]
        assert w["retry_in"] > 0
    _assert_soon(warnings[0][0])


def test_backup_against_a_closed_port_warns_within_a_second_and_at_every_attempt(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    out = _start(["backup"], root, log_on_stdout=False)
    out.wait(60)
    assert out.proc.returncode == 1
    _assert_every_attempt(out.warnings(), 5)
    assert "Consul unreachable at http://127.0.0.1:1" in out.lines[-1][1]  # the error, last


def test_restore_against_a_closed_port_warns_within_a_second_and_at_every_attempt(tmp_path):
    out = _start(["restore"], tmp_path / "root", log_on_stdout=False)
    out.wait(60)
    assert out.proc.returncode == 1
    _assert_every_attempt(out.warnings(), 5)
    assert "Consul unreachable at http://127.0.0.1:1" in out.lines[-1][1]


def test_a_sidecar_starting_without_consul_says_so_within_a_second_and_at_every_attempt(tmp_path):
    # The sidecar logs to stdout; its eight attempts span about 23 s, so the test stops it after three.
    out = _start(["run", "--role", "master"], tmp_path / "root", log_on_stdout=True)
    try:
        deadline = time.monotonic() + 30
        while len(out.warnings()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        assert stop_process(out.proc, 10) == 0  # SIGTERM while waiting for Consul: a clean stop
    warnings = out.warnings()
    assert [w["attempt"] for _, w in warnings][:3] == ["1/8", "2/8", "3/8"]
    assert [w["retry_in"] for _, w in warnings][:3] == [0.2, 0.4, 0.8]
    _assert_soon(warnings[0][0])


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
