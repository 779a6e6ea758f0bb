"""The benchmark script (bench/run.py) in its quick mode, as CI runs it: against a real
single Consul server and a dev agent, tiny sizes, every figure measured and written as
JSON. Benchmarks are not timed tests: no goal is enforced here (docs/BENCH.md has the
figures of a full run)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from ..support import REPO

pytestmark = pytest.mark.consul

# The figures of bench/run.py itself; its suites are tests/integration/test_bench_suites_quick.py's.
CORE = "backup,restore,guard,daemon,icinga-state"
# Every figure of the report, per Consul mode, as a path into its JSON.
FIGURES = [
    *[("backup", tree, key) for tree in "abc" for key in ("statesync_s", "raw_s", "ratio")],
    ("incremental", "kv_writes_max"), ("incremental", "ms_median"), ("incremental", "requests_median"),
    *[("restore", "disk", key) for key in ("statesync_s", "raw_s", "ratio", "kv_export_s")],
    ("daemon_latency", "p50_s"), ("daemon_latency", "p99_s"),
    *[("guard", label, key) for label in ("default", "tuned") for key in ("p50_s", "p99_s")],
    ("guard", "default", "settings", "confirmations"), ("guard", "default", "settings", "confirm_interval_s"),
    ("guard", "tuned", "settings", "confirmations"), ("guard", "tuned", "settings", "confirm_interval_s"),
    ("idle", "cpu_percent"), ("idle", "rss_mb"),
    ("raft", "payload_bytes_median"), ("raft", "raft_entries_median"),
]


def _dig(doc: dict, path: tuple):
    for key in path:
        assert isinstance(doc, dict) and key in doc, f"missing {'/'.join(path)}"
        doc = doc[key]
    return doc


def test_the_benchmark_runs_in_quick_mode_and_writes_every_figure_as_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick", "--only", CORE, "--json", str(out),
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert set(report["modes"]) == {"server", "dev"}
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["memory_gib"] > 0
    assert machine["consul_version"].startswith("Consul v")
    for mode, figures in report["modes"].items():
        for path in FIGURES:
            value = _dig(figures, path)
            assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (mode, path, value)
        assert figures["backup"]["b"]["files"] > 0 and figures["incremental"]["changes"] > 0
    # The raft log is on disk only for the real server: there Consul's writes are measured.
    assert report["modes"]["server"]["raft"]["consul_write_bytes_median"] is not None
    assert report["modes"]["dev"]["raft"]["consul_write_bytes_median"] is None
    table = out.with_suffix(".md").read_text()
    assert "| figure |" in table and "initial backup" in table and "guard reaction" in table
    # the table printed on stdout names every figure too
    assert "idle sidecar" in proc.stdout and "restore of (b)" in proc.stdout


def test_the_takeover_benchmark_measures_a_round_of_each_and_writes_its_figures(tmp_path):
    out = tmp_path / "takeover.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench/takeover.py"), "--rounds", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())
    for figure in ("after_sigkill_s", "after_sigterm_s"):
        assert len(report[figure]["reps"]) == 1 and report[figure]["median"] > 0, report
        assert isinstance(report[figure]["met"], bool)  # reported, never enforced
