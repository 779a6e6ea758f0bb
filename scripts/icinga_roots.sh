#!/usr/bin/env bash
# Builds, cached under .cache/roots/, one root file system per Icinga 2 version that the
# version matrix of issue 25 needs, from the machine's own Debian mirror with a sources
# list of their own (never the host's apt state):
#   trixie: icinga2 2.14.x and python3 3.13 (+ venv), for the 2.14 runs and the 3.13 tier
#   sid:    icinga2 2.16.x (and sid's python3, to run the Icinga tests inside it)
# Bookworm's 2.13 is the host's own /usr/sbin/icinga2 (scripts/setup.sh).
# A root is used with `unshare -m` + bind mounts + chroot (docs/ICINGA_VERSIONS.md).
# Cached: a root whose .statesync-inputs holds the sha256 of its inputs (this script,
# the suite, the package list, the mirror lines) is not built again.
# Usage: scripts/icinga_roots.sh [trixie] [sid]   (no argument: both)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache/roots"
mkdir -p "$cache"

log() { printf 'icinga_roots: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap in root mode, chroot)"
command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"

# The first non-security URI of the machine's apt sources (as scripts/images.sh finds it).
mirror() {
  local main
  main=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '$2 !~ /security/ && !done { print $2; done = 1 }' || true)
  [ -n "$main" ] || main=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null |
    awk '$2 !~ /security/ && !done { print $2; done = 1 }' || true)
  [ -n "$main" ] || return 1
  printf '%s\n' "$main"
}

# Packages per suite. icinga2-bin/-common only: no icinga2 metapackage (it pulls
# monitoring-plugins and a mailer); python3-venv brings ensurepip for the 3.13 venv.
packages() {
  case $1 in
    trixie) echo "icinga2-bin,icinga2-common,python3,python3-venv,ca-certificates,openssl" ;;
    sid)    echo "icinga2-bin,icinga2-common,python3,python3-venv,ca-certificates,openssl" ;;
    *) return 1 ;;
  esac
}

build_root() {
  local suite=$1 uri pkgs sources hash root="$cache/$1" tmp start
  uri=$(mirror) || die "cannot find the Debian mirror in the apt sources"
  pkgs=$(packages "$suite") || die "unknown suite $suite (trixie or sid)"
  sources="deb $uri $suite main"
  if [ "$suite" = trixie ]; then
    sources+=$'\n'"deb $uri trixie-updates main"
    local sec
    sec=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk '$2 ~ /security/ && !done { print $2; done = 1 }' || true)
    [ -z "$sec" ] || sources+=$'\n'"deb $sec trixie-security main"
  fi
  # The root's nagios gets the host's uid/gid: the sidecar runs on the host and restores
  # files to the host's nagios (restore/apply.py owner_of, by name), and a 0600 key owned
  # by another uid is unreadable to the Icinga 2 in the root. Left alone, trixie's
  # adduser gives nagios 100:101 and sid's sysusers 996:996 (bookworm host: 102:105).
  local ids
  ids=$(getent passwd nagios | cut -d: -f3,4 || true)
  hash=$( { sha256sum <"$0"; printf '%s\n%s\n%s\n%s\n' "$suite" "$pkgs" "$sources" "$ids"; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$root/.statesync-inputs" 2>/dev/null || true)" = "$hash" ]; then
    log "$suite cached (0 s): $(cat "$root/.statesync-versions")"
    return
  fi
  start=$(date +%s)
  tmp="$cache/.$suite.new"
  rm -rf "$tmp"
  local lines=() aptopts=()
  while IFS= read -r l; do lines+=("$l"); done <<<"$sources"
  # The machine's mirror is a frozen copy: sid's InRelease is valid for a week only, so
  # its Valid-Until has passed and apt refuses it ("Release file ... is expired"). The
  # signature is still checked; only the expiry is not. Stable suites carry no expiry.
  [ "$suite" != sid ] || aptopts+=(--aptopt='Acquire::Check-Valid-Until "false"')
  local hooks=()
  if [ -n "$ids" ]; then
    local uid=${ids%%:*} gid=${ids#*:}
    hooks+=(--essential-hook="echo 'nagios:x:$gid:' >>\"\$1/etc/group\"; echo 'nagios:!::' >>\"\$1/etc/gshadow\"; echo 'nagios:x:$uid:$gid::/var/lib/nagios:/usr/sbin/nologin' >>\"\$1/etc/passwd\"; echo 'nagios:!*:1::::::' >>\"\$1/etc/shadow\"")
  fi
  # Mount points for the node's directories and /proc (icinga2 lists /proc/self/fd at start).
  hooks+=(--customize-hook='mkdir -p "$1"/run/icinga2 "$1"/var/cache/icinga2 "$1"/var/log/icinga2')
  # No docs, man pages or locales; no apt lists: the root is never upgraded, it is rebuilt.
  nice -n 10 mmdebstrap --mode=root --variant=minbase --quiet --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --aptopt='APT::Install-Recommends "false"' "${aptopts[@]}" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' "${hooks[@]}" \
    "$suite" "$tmp" "${lines[@]}" >"$cache/$suite.log" 2>&1 ||
    { tail -n 25 "$cache/$suite.log" >&2; rm -rf "$tmp"; die "$suite: mmdebstrap failed (log $cache/$suite.log)"; }
  local versions
  [ -z "$ids" ] || [ "$(chroot "$tmp" id -u nagios):$(chroot "$tmp" id -g nagios)" = "$ids" ] ||
    { rm -rf "$tmp"; die "$suite: nagios in the root is not $ids"; }
  versions=$(chroot "$tmp" dpkg-query -W -f='${Package}=${Version} ' icinga2-bin python3 2>/dev/null || true)
  printf '%s\n' "$versions" >"$tmp/.statesync-versions"
  printf '%s\n' "$hash" >"$tmp/.statesync-inputs"
  rm -rf "$root"
  mv "$tmp" "$root"
  log "$suite built in $(( $(date +%s) - start )) s, $(du -sh "$root" | cut -f1): $versions"
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(trixie sid)
for s in "${suites[@]}"; do build_root "$s"; done
