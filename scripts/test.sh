#!/usr/bin/env bash
# The project's test command: installs what the suite needs (scripts/setup.sh), then runs it.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m "not e2e" -x
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
