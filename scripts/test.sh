#!/usr/bin/env bash
# The project's test command: installs what the suite needs (scripts/setup.sh: Consul,
# Icinga 2, the container engine and the stand-in images), lints the tree with ruff, then runs it.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m "not e2e" -x
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
engine_was_up=0
if [ -x /usr/bin/docker ] && /usr/bin/docker info >/dev/null 2>&1; then engine_was_up=1; fi
bash scripts/setup.sh
# A container engine this run started is stopped again when the run ends; one that was
# already running is left alone.
if [ "$engine_was_up" = 0 ]; then trap 'bash scripts/engine.sh stop' EXIT; fi
# The lint first, over the whole tree whatever arguments pytest gets: a finding fails the run
# before a test starts (rules and why: pyproject.toml [tool.ruff]).
.venv/bin/ruff check --quiet .
# Two passes (tests/parallel.py): the tests spread over pytest-xdist workers (most of them wait
# on Consul, Icinga 2 or a subprocess, so more workers than the 2 cores pay; `-n N` among the
# arguments overrides), then those marked serial, which measure a process's peak memory, alone.
# No STATESYNC_* variable for it: the statesync processes the tests start refuse unknown ones.
status=0
.venv/bin/python -m pytest -n 4 --dist loadgroup --serial=skip "$@" || status=$?
serial=0
.venv/bin/python -m pytest --serial=only "$@" -n 0 || serial=$?
# Exit 5 is "no test selected": fine for one pass (tests/unit holds no serial test), not for both.
if [ "$status" = 5 ]; then status=$serial; elif [ "$serial" != 5 ] && [ "$status" = 0 ]; then status=$serial; fi
exit "$status"
