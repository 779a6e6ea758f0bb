#!/usr/bin/env bash
# Makes a container engine available for the tests: Debian's docker.io (dockerd 20.10)
# and docker-compose 1.29, started in the background when no daemon answers.
# Idempotent: with a daemon running it only checks that it answers.
#
# Always /usr/bin/docker: another, unrelated client may sit earlier in PATH.
#
# dockerd flags, and why:
#   --storage-driver=overlay2            the backing filesystem supports it; vfs would
#                                        copy every layer and make builds minutes slower
#   --exec-opt native.cgroupdriver=cgroupfs
#                                        no systemd as PID 1 on the CI machine
#   --iptables=false --ip6tables=false   leaves the host's firewall alone and gives
#                                        containers no NAT route to other hosts; containers
#                                        on one user-defined bridge still reach each other
#                                        (plain L2) and resolve service names (the embedded
#                                        DNS sets up its rules inside the container's own
#                                        namespace); builds that download use --network host
#   --default-ulimit ...                 the machine's own limits are huge, and some
#                                        daemons (Consul, Icinga 2) size tables by them
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache="$here/.cache"
mkdir -p "$cache"
docker=/usr/bin/docker

log() { printf 'engine: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "${1:-}" = stop ]; then
  # Only the daemon this script started (its pid file); one started otherwise is not ours.
  [ -f "$cache/dockerd.pid" ] || exit 0
  pid=$(cat "$cache/dockerd.pid")
  as_root kill -TERM "$pid" 2>/dev/null || { rm -f "$cache/dockerd.pid"; exit 0; }
  for _ in $(seq 1 30); do
    [ -d "/proc/$pid" ] || { log "dockerd $pid stopped"; exit 0; }
    sleep 1
  done
  die "dockerd $pid did not stop within 30 s"
fi

missing=()
{ [ -x "$docker" ] && [ -x /usr/sbin/dockerd ]; } || missing+=(docker.io)
[ -x /usr/bin/docker-compose ] || missing+=(docker-compose)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq >/dev/null
  # docker.io's postinst would start the packaged service where systemd runs; the daemon
  # below is ours either way, so a failed service start must not fail the install.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

if "$docker" info >/dev/null 2>&1; then
  exit 0
fi

pidfile="$cache/dockerd.pid"
if [ -f "$pidfile" ] && as_root kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  log "dockerd $(cat "$pidfile") is running but not answering yet"
  launcher=""
else
  log "starting dockerd (log: $cache/dockerd.log)"
  rm -f "$pidfile"
  # setsid: the daemon outlives this script and the test run that started it.
  # dockerd writes its own pid file: under sudo, $! would be sudo's pid.
  as_root setsid /usr/sbin/dockerd \
    --pidfile "$pidfile" \
    --storage-driver=overlay2 \
    --exec-opt native.cgroupdriver=cgroupfs \
    --iptables=false --ip6tables=false \
    --default-ulimit nofile=20000:20000 \
    --default-ulimit nproc=32768:32768 \
    >>"$cache/dockerd.log" 2>&1 </dev/null &
  launcher=$!
fi

# kill -0 cannot tell: a root launcher under sudo gives EPERM, an exited one is a zombie.
alive() { local st; st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1); [ -n "$st" ] && [ "$st" != Z ]; }

for _ in $(seq 1 60); do
  if "$docker" info >/dev/null 2>&1; then log "dockerd is up"; exit 0; fi
  if [ -n "$launcher" ] && ! alive "$launcher"; then
    die "dockerd exited at start: $(tail -1 "$cache/dockerd.log" 2>/dev/null)"
  fi
  sleep 1
done
die "dockerd did not answer within 60 s (see $cache/dockerd.log)"
