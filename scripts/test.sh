#!/usr/bin/env bash
# The project's test command: installs what the suite needs (scripts/setup.sh: Consul,
# Icinga 2, the container engine and the stand-in images), lints the tree with ruff, then runs it.
# Extra arguments go to pytest, e.g. ./scripts/test.sh -m "not e2e" -x
# When every path among them lies under tests/unit (./scripts/test.sh tests/unit), only the
# .venv is built: that tier needs nothing but Python and the file system, so no Consul, Icinga 2
# or container engine is installed or started.
# After the host's Python (3.11) passes, a third pass runs PY313 below again on Python 3.13,
# inside the trixie root that scripts/setup.sh builds (scripts/pytest_in_root.sh); not in the
# unit-only run, which builds no root. README.md ("Two Pythons") says why.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"

# What runs on Python 3.13 too: the unit tier, and the tests of every TLS client (the enrolment's
# and the restart trigger's Icinga 2 API client against a real Icinga 2, the parent pin, the
# acceptor, Consul over HTTPS), where 3.13 differs (strict X.509 by default). Not the Icinga API's
# own behaviour (tests/e2e/test_enrol_icinga_api.py): that is Icinga's, run on every Icinga version.
PY313=(tests/unit tests/integration/test_security_tls.py tests/integration/test_security_tls_names.py
       tests/integration/test_guard_parent.py tests/integration/test_enrol_acceptor_health.py
       tests/e2e/test_icinga_api_tls.py)
PY313_SUITE=trixie  # the root, .cache/roots/trixie

# Whether an argument names tests: it exists and lies in tests/ (a node id counts by its file).
# Any other argument, an option or an option's value, goes to pytest as it is.
test_path() {
  local path=${1%%::*}
  [ -e "$path" ] || return 1
  case "$(realpath "$path")/" in "$here/tests/"*) return 0 ;; *) return 1 ;; esac
}

# py313_plan ARGS: sets py313_argv, the arguments of the 3.13 pass for test.sh's ARGS: every
# option, and the named paths cut down to PY313 (a path inside PY313 as given, PY313's entries
# inside a named path), or PY313 when no path is named. Empty when paths are named and none
# meets PY313: the pass is left out.
py313_plan() {
  local -a opts=() paths=()
  local named=0 arg rel entry real
  for arg in "$@"; do
    if ! test_path "$arg"; then opts+=("$arg"); continue; fi
    named=1
    real=$(realpath "${arg%%::*}")
    rel=${real#"$here"/}${arg#"${arg%%::*}"}
    for entry in "${PY313[@]}"; do
      case "$real/" in
        "$here/$entry/"*) paths+=("$rel"); break ;;
        *) case "$here/$entry/" in "$real/"*) paths+=("$entry") ;; esac ;;
      esac
    done
  done
  py313_argv=()
  if [ "$named" = 0 ]; then paths=("${PY313[@]}"); fi
  [ ${#paths[@]} -gt 0 ] || return 0
  # The host passes' spread (tests/parallel.py); the arguments after it override it (-n N).
  py313_argv=(-n 4 --dist loadgroup --serial=skip "${paths[@]}" "${opts[@]}")
}

# Sourced (tests/unit/test_test_script.py): the functions only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

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

py313_argv=()
if unit_only "$@"; then
  STATESYNC_SETUP_ONLY=python bash scripts/setup.sh
else
  py313_plan "$@"
  engine_was_up=0
  if [ -x /usr/bin/docker ] && /usr/bin/docker info >/dev/null 2>&1; then engine_was_up=1; fi
  bash scripts/setup.sh
  # A container engine this run started is stopped again when the run ends; one that was
  # already running is left alone.
  if [ "$engine_was_up" = 0 ]; then trap 'bash scripts/engine.sh stop' EXIT; fi
fi
if [ ${#py313_argv[@]} -gt 0 ] && ! [ -x ".cache/roots/$PY313_SUITE/usr/bin/python3" ]; then
  echo "test.sh: no Python 3.13 root at .cache/roots/$PY313_SUITE for the 3.13 pass:" \
       "scripts/setup.sh builds it (scripts/icinga_roots.sh $PY313_SUITE)" >&2
  exit 1
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
if [ ${#py313_argv[@]} -gt 0 ]; then
  py313=0
  # Inside the root, its own Icinga 2 (2.14) is the only version the e2e tests may label as theirs.
  E2E_ICINGA_VERSIONS=2.14 scripts/pytest_in_root.sh "$PY313_SUITE" "${py313_argv[@]}" || py313=$?
  # It runs a part of what the host passes ran, so "none selected" (5) there is no failure here.
  if [ "$py313" != 5 ] && [ "$py313" != 0 ] && { [ "$status" = 0 ] || [ "$status" = 5 ]; }; then status=$py313; fi
elif unit_only "$@"; then
  echo "test.sh: the unit tier ran on this Python only; on 3.13 (needs the $PY313_SUITE root):" \
       "scripts/pytest_in_root.sh $PY313_SUITE tests/unit" >&2
else
  echo "test.sh: no Python 3.13 pass: none of the given paths is among those it runs (PY313 in scripts/test.sh)" >&2
fi
exit "$status"
