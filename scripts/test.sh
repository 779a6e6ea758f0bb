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
status=0
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
