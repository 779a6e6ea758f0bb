"""Each suite of bench/suites.py in its quick mode through bench/run.py, as one documented
command runs them: against real Consul (and real Icinga 2 where the suite needs it), every figure
measured and rendered. Benchmarks are not timed tests: no goal is checked here."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..support import REPO

sys.path.insert(0, str(REPO / "bench"))
import suites  # noqa: E402

MARKS = {"": [pytest.mark.consul], "icinga": [pytest.mark.consul, pytest.mark.e2e],
         "engine": [pytest.mark.consul, pytest.mark.engine]}


@pytest.mark.parametrize("suite", [pytest.param(s, id=s.name, marks=MARKS[s.needs]) for s in suites.SUITES])
def test_each_suite_runs_quick_through_the_one_bench_command_and_renders_its_table(suite, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench/run.py"), "--quick", "--only", suite.name,
                           "--json", str(out), "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())["suites"][suite.name]
    assert "error" not in result, result
    table = suites.render(suite, result)
    assert table.count("\n|") >= 2, table  # a header, its rule and at least one row
    assert f"## {suite.name}" in proc.stdout
