#!/usr/bin/env bash
# Builds the stand-in images of tests/images/ (no registry is reachable from the test
# machine, so every image a compose stack needs is built here from Debian packages).
# Cached: an image whose label org.statesync.standin.inputs already holds the sha256 of
# its build inputs is not built again. The inputs include the parent image's ID, so a
# rebuilt base rebuilds everything on it.
# Needs a running engine (scripts/engine.sh) and, for the Consul image, the binary that
# scripts/setup.sh unpacks into .cache/consul/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
images="$here/tests/images"
docker=/usr/bin/docker
key=org.statesync.standin.inputs
mkdir -p "$cache/images"

log() { printf 'images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

"$docker" info >/dev/null 2>&1 || die "no container engine answers: run scripts/engine.sh first"

# The first URI of the lines on stdin whose URI does (~) or does not (!~) name security.
first_uri() { awk -v op="$1" '{ sec = $2 ~ /security/ } !done && (op == "~" ? sec : !sec) { print $2; done = 1 }'; }

# The machine's own Debian mirrors (as scripts/setup.sh finds them), as apt lines for the
# suite $1 (bookworm: with its -updates and -security; sid has neither).
mirrors() {
  local suite=$1 main sec
  # One awk that reads to the end picks the first match: `| head -1` would close the pipe
  # early, and under pipefail the writer's SIGPIPE (141) is a failure that `|| true` hid.
  # `|| true` stays for what it is meant for: no sources file, nothing matching.
  main=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | first_uri '!~' || true)
  [ -n "$main" ] || main=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | first_uri '!~' || true)
  sec=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | first_uri '~' || true)
  [ -n "$sec" ] || sec=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null | first_uri '~' || true)
  [ -n "$main" ] || return 1
  echo "deb $main $suite main"
  [ "$suite" = sid ] && return 0
  echo "deb $main $suite-updates main"
  if [ -n "$sec" ]; then echo "deb $sec $suite-security main"; fi
}

# sha256 over every file of a context (path, mode, content) plus extra text.
inputs_hash() {
  local ctx=$1 extra=$2
  {
    (cd "$ctx" && find . \( -type f -o -type l \) -print0 | LC_ALL=C sort -z |
      while IFS= read -r -d '' f; do
        printf '%s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
      done)
    printf '%s\n' "$extra"
  } | sha256sum | cut -d' ' -f1
}

image_label() {
  "$docker" image inspect -f "{{ index .Config.Labels \"$key\" }}" "$1" 2>/dev/null || true
}

image_id() { "$docker" image inspect -f '{{ .Id }}' "$1" 2>/dev/null || true; }

# [SUITE=<debian suite>] build <name> <tag> <parent tag or -> [file to copy into the context]...
# SUITE (default bookworm) is the suite a context with a build.sh is made from.
build() {
  local name=$1 tag=$2 parent=$3; shift 3
  local suite=${SUITE:-bookworm}
  local ctx extra="" hash start rc=0 logfile="$cache/images/$name.log"
  ctx=$(mktemp -d)
  cp -a "$images/$name/." "$ctx/"
  local f
  for f in "$@"; do
    [ -f "${f%%=*}" ] || { rm -rf "$ctx"; die "$tag: missing build input ${f%%=*}"; }
    cp "${f%%=*}" "$ctx/${f#*=}"
  done
  if [ "$parent" != - ]; then
    extra="parent $(image_id "$parent")"
  fi
  if [ -x "$ctx/build.sh" ]; then
    local m
    m=$(mirrors "$suite") || { rm -rf "$ctx"; die "$tag: cannot find the Debian mirror in the apt sources"; }
    extra="$extra"$'\n'"$m"
  fi
  hash=$(inputs_hash "$ctx" "$extra")
  if [ "$(image_label "$tag")" = "$hash" ]; then
    rm -rf "$ctx"
    log "$tag cached (0 s)"
    return
  fi
  start=$(date +%s)
  if [ -x "$ctx/build.sh" ]; then
    SUITE="$suite" MIRRORS="$m" "$ctx/build.sh" "$tag" "$key=$hash" >"$logfile" 2>&1 || rc=$?
  else
    "$docker" build --force-rm --network host --label "$key=$hash" -t "$tag" "$ctx" >"$logfile" 2>&1 || rc=$?
  fi
  rm -rf "$ctx"
  if [ $rc != 0 ]; then
    tail -n 25 "$logfile" >&2
    die "$tag: build failed (exit $rc, full log $logfile)"
  fi
  log "$tag built in $(( $(date +%s) - start )) s"
}

build debian statesync-standin/debian:bookworm -
build python statesync-standin/python:3.11-slim statesync-standin/debian:bookworm \
  "/etc/ssl/certs/ca-certificates.crt=host-ca-bundle.crt"
build consul statesync-standin/consul:1.8.7 statesync-standin/debian:bookworm \
  "$cache/consul/usr/bin/consul=consul"
build icinga2 statesync-standin/icinga2:2.14 statesync-standin/debian:bookworm
# sid: the suite with Icinga 2 2.16, the first version of the image built from Icinga's own
# Containerfile (tests/images/icinga2-2.16/Dockerfile says what it reproduces).
SUITE=sid build debian-sid statesync-standin/debian:sid -
build icinga2-2.16 statesync-standin/icinga2:2.16 statesync-standin/debian:sid
