#!/usr/bin/env bash
# The project's test command: installs what the suite needs (scripts/setup.sh: Consul,
# Icinga 2, the container engine and the stand-in images), lints the tree with ruff, then runs it.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m "not e2e" -x
# When every path among them lies under tests/unit (./scripts/test.sh tests/unit), only the
# .venv is built: that tier needs nothing but Python and the file system, so no Consul, Icinga 2
# or container engine is installed or started.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# Whether the arguments name test paths and all of them lie in the unit tier. An argument counts
# as a path when it exists (a node id counts by its file); option values such as -m's expression
# do not, and one that happens to name a file elsewhere only costs the whole setup.
unit_only() {
  local paths=0 arg path
  for arg in "$@"; do
    path=${arg%%::*}
    [ -e "$path" ] || continue
    paths=$((paths + 1))
    case "$(realpath "$path")/" in "$here/tests/unit/"*) ;; *) return 1 ;; esac
  done
  [ "$paths" -gt 0 ]
}

if unit_only "$@"; then
  STATESYNC_SETUP_ONLY=python bash scripts/setup.sh
else
  engine_was_up=0
  if [ -x /usr/bin/docker ] && /usr/bin/docker info >/dev/null 2>&1; then engine_was_up=1; fi
  bash scripts/setup.sh
  # A container engine this run started is stopped again when the run ends; one that was
  # already running is left alone.
  if [ "$engine_was_up" = 0 ]; then trap 'bash scripts/engine.sh stop' EXIT; fi
fi
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
