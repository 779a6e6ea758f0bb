#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine: Consul 1.8.7 from
# Debian bullseye (unpacked into .cache/, not installed system-wide), Icinga 2 from
# the machine's own suite (2.13 on bookworm), the root file systems with Icinga 2 2.14
# (trixie) and 2.16 (sid) for the version matrix (scripts/icinga_roots.sh, under
# .cache/roots/), and the Python package with its test extras.
# Idempotent: a second run installs nothing it already has.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
mkdir -p "$cache"

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_update_once() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq >/dev/null; apt_updated=1; fi
}

install_consul() {
  if [ -x "$cache/consul/usr/bin/consul" ]; then return; fi
  log "fetching consul from Debian bullseye"
  local apt="$cache/apt-bullseye"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/etc"
  # Same mirror as the machine's own sources, only the suite differs.
  local uri
  uri=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 1p | awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | sed -n 1p | awk '{print $2}')
  [ -n "$uri" ] || { log "cannot find the Debian mirror in the apt sources"; exit 1; }
  echo "deb [trusted=yes] $uri bullseye main" >"$apt/etc/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/etc/sources.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o "APT::Get::List-Cleanup=0")
  apt-get "${opts[@]}" update -qq >/dev/null
  (cd "$apt/archives" && apt-get "${opts[@]}" download consul >/dev/null)
  rm -rf "$cache/consul" && mkdir -p "$cache/consul"
  dpkg-deb -x "$apt"/archives/consul_*.deb "$cache/consul"
  # Whole output first: `| head -1` would close the pipe early, and pipefail turns the
  # writer's SIGPIPE into a failed setup (exit 141) whenever consul is slower than head.
  local version
  version=$("$cache/consul/usr/bin/consul" version)
  printf '%s\n' "${version%%$'\n'*}" >&2
}

install_debian_packages() {
  # icinga2 for the end-to-end tests; docker-compose (v1) to validate compose/; faketime to
  # run the CLI under a skewed clock (tests/integration/test_clock_skew.py).
  local missing=()
  command -v icinga2 >/dev/null 2>&1 || [ -x /usr/sbin/icinga2 ] || missing+=(icinga2-bin icinga2-common)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v jq >/dev/null 2>&1 || missing+=(jq)  # tests/integration/test_crafted_names.py reads --json through jq
  command -v faketime >/dev/null 2>&1 || missing+=(faketime)
  [ ${#missing[@]} -eq 0 ] && return
  log "installing ${missing[*]}"
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The .venv with statesync and its test extras: the only step the unit tier needs
# (scripts/test.sh runs just this one for tests/unit).
install_python() {
  local venv="$here/.venv"
  # Debian's python3 lacks venv's pip bootstrap until python3-venv is installed; without it
  # `python3 -m venv` leaves a .venv with no pip behind.
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    log "installing python3-venv"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  if [ ! -x "$venv/bin/pip" ]; then python3 -m venv --clear "$venv"; fi
  if ! "$venv/bin/python" -c 'import statesync, pytest, hypothesis' 2>/dev/null \
     || [ "$here/pyproject.toml" -nt "$venv/.installed" ]; then
    log "installing statesync and its test extras into .venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
    touch "$venv/.installed"
  fi
}

# The version matrix's roots (tests/e2e/conftest.py): built by mmdebstrap from the machine's
# own mirror, cached (a second run checks a hash and is done in a fraction of a second).
# After "debian": the roots pin nagios to the host's uid/gid, and nagios comes with icinga2-common.
install_roots() {
  # Host state the build uses, all of a fresh bookworm: the apt sources (the mirror's URI) and
  # bookworm's own archive keyring (sid's and trixie's InRelease are signed with the 12/bookworm
  # key as well as the 13/trixie one, checked 2026-12-07), nothing of the host's apt lists.
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    log "installing mmdebstrap"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
  fi
  getent passwd nagios >/dev/null || { log "no nagios user: run the debian step first (icinga2-common makes it)"; exit 1; }
  as_root bash "$here/scripts/icinga_roots.sh" trixie sid
}

install_engine() {
  # After consul: the Consul stand-in image is built from the binary fetched above.
  bash "$here/scripts/engine.sh"
  bash "$here/scripts/images.sh"
}

# STATESYNC_SETUP_ONLY limits the steps (the demo needs no Icinga 2): "consul python"; the unit
# tier needs only "python".
steps=${STATESYNC_SETUP_ONLY:-"consul debian roots python engine"}
for step in $steps; do
  case $step in
    consul) install_consul ;;
    debian) install_debian_packages ;;
    python) install_python ;;
    roots) install_roots ;;
    engine) install_engine ;;
    *) log "unknown setup step $step"; exit 2 ;;
  esac
done
log "ready"
