"""scripts/test.sh's Python 3.13 pass gets what the arguments ask for: the options as given, and of
the named paths only those among the tests it runs on 3.13 (PY313); none when none is."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPREAD = ["-n", "4", "--dist", "loadgroup", "--serial=skip"]


def plan(*args: str) -> list[str]:
    """The 3.13 pass's arguments for ``./scripts/test.sh ARGS``, from the script's own function."""
    script = 'source scripts/test.sh; py313_plan "$@"; [ ${#py313_argv[@]} = 0 ] || printf "%s\\0" "${py313_argv[@]}"'
    proc = subprocess.run(["bash", "-c", script, "plan", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, check=True)
    return proc.stdout.split("\0")[:-1]


PY313 = plan()[len(SPREAD):]


def test_without_arguments_the_pass_runs_the_unit_tier_and_the_tls_client_tests_that_exist():
    assert plan()[:len(SPREAD)] == SPREAD
    assert PY313[0] == "tests/unit" and "tests/e2e/test_icinga_api_tls.py" in PY313
    assert all((ROOT / p).exists() for p in PY313)


def test_options_alone_run_the_whole_set_with_them():
    assert plan("-m", "not e2e", "-x") == SPREAD + PY313 + ["-m", "not e2e", "-x"]


def test_an_option_value_that_names_a_file_outside_tests_stays_an_option(tmp_path):
    assert plan("--basetemp", str(tmp_path), "-n", "0") == SPREAD + PY313 + ["--basetemp", str(tmp_path), "-n", "0"]


@pytest.mark.parametrize("args, paths", [
    (["tests/unit"], ["tests/unit"]),
    (["tests/unit/test_jsonload.py::test_keyword_arguments_go_to_json"],
     ["tests/unit/test_jsonload.py::test_keyword_arguments_go_to_json"]),
    ([str(ROOT / "tests/unit/test_tlsclient.py")], ["tests/unit/test_tlsclient.py"]),  # absolute, made relative
    (["tests"], PY313),
    (["tests/e2e/"], [p for p in PY313 if p.startswith("tests/e2e/")]),
    (["tests/integration/test_compose.py", "tests/e2e/test_icinga_api_tls.py"], ["tests/e2e/test_icinga_api_tls.py"]),
])
def test_named_paths_are_cut_down_to_those_among_the_set(args, paths):
    assert plan(*args, "-x") == SPREAD + paths + ["-x"]


def test_no_pass_when_no_named_path_is_among_the_set():
    assert plan("tests/integration/test_compose.py", "-x") == []
