#!/usr/bin/env bash
# Quick start: fetch what the demo needs (Consul into .cache/, statesync into .venv/),
# then run `statesync demo`. Safe to run again; it reuses what it fetched.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
STATESYNC_SETUP_ONLY="consul python" bash scripts/setup.sh
exec .venv/bin/statesync demo
