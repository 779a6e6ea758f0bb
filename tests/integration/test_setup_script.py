"""The quick start's setup script, run again and again: it must succeed every time.

`consul version | head -1` under `set -o pipefail` once failed a setup now and then (exit 141:
head closed the pipe before consul had written everything). Such a race shows only over
many runs, so the script runs twenty times in a row, on a machine where everything is
installed (scripts/test.sh ran it first), with the steps the quick start uses.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = 20


@pytest.mark.slow
def test_the_setup_script_succeeds_twenty_times_in_a_row():
    env = dict(os.environ, STATESYNC_SETUP_ONLY="consul python")
    for n in range(1, RUNS + 1):
        proc = subprocess.run(["bash", str(ROOT / "scripts/setup.sh")], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"run {n} of {RUNS} exited {proc.returncode}: {proc.stderr[-2000:]}"
        assert proc.stderr.rstrip().endswith("setup: ready"), f"run {n}: {proc.stderr[-2000:]}"
        # Idempotent: after the first run (which may find work left), no run fetches or installs again.
        again = [line for line in proc.stderr.splitlines() if line.startswith(("setup: fetching", "setup: installing"))]
        assert n == 1 or not again, f"run {n} did work again: {again}"
