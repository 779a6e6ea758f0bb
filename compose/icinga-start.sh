#!/bin/sh
# Entrypoint wrapper for the official icinga/icinga2 image (2.14/2.15 generation: Go
# /entrypoint, /data-init). Mounted read-only into the icinga2 container by the stacks
# in this directory; it ends by exec'ing the image's own /entrypoint as PID 1, so the
# image's first-start logic (copy /data-init, node setup) runs unchanged.
#
# Why each step:
# - Icinga must not start before statesync has restored the volume: a master that starts
#   on an empty volume makes a new CA. Compose ordering alone is not enough
#   (podman-compose 1.0.3 ignores depends_on conditions), so wait for the ready marker
#   that statesync writes once its start-up restore is done.
# - The entrypoint hands a set-but-empty ICINGA_* variable on as a value: an empty
#   ICINGA_CACERT becomes a 0-byte certs/ca.crt, after which node setup never runs again.
#   Unset empty ones, and remove such a 0-byte ca.crt left by an earlier start.
# - A satellite enrols with its own ticket (a Docker secret, never the TicketSalt) and
#   pins the parent certificate that statesync checked against the CA published in
#   Consul, not one fixed in the environment, which is stale after a CA change.
set -eu

ready=${STATESYNC_READY_FILE:-/data/.statesync-ready}
timeout=${ICINGA_START_READY_TIMEOUT:-900}
waited=0
while [ ! -e "$ready" ]; do
  if [ "$waited" -ge "$timeout" ]; then
    echo "icinga-start: statesync did not mark $ready ready within ${timeout}s; not starting Icinga 2" >&2
    exit 1
  fi
  if [ $((waited % 15)) -eq 0 ]; then
    echo "icinga-start: waiting for statesync's start-up restore ($ready)" >&2
  fi
  sleep 1
  waited=$((waited + 1))
done

for var in $(env | sed -n 's/^\(ICINGA_[A-Z_]*\)=$/\1/p'); do
  unset "$var"
done

ca=/data/var/lib/icinga2/certs/ca.crt
if [ -f "$ca" ] && [ ! -s "$ca" ]; then
  echo "icinga-start: removing the empty $ca an earlier start left, so that node setup runs" >&2
  rm -f "$ca"
fi

if [ ! -s "$ca" ]; then
  ticket=${ICINGA_TICKET_FILE:-/run/secrets/icinga_ticket}
  if [ -z "${ICINGA_TICKET:-}" ] && [ -r "$ticket" ]; then
    ICINGA_TICKET=$(tr -d ' \r\n' <"$ticket")
    export ICINGA_TICKET
  fi
  parent=${STATESYNC_GUARD_TRUSTED_PARENT_FILE:-}
  if [ -n "$parent" ]; then
    if [ ! -s "$parent" ]; then
      echo "icinga-start: $parent (the parent's certificate, checked by statesync) is missing; not enrolling blind" >&2
      exit 1
    fi
    ICINGA_TRUSTEDCERT=$(cat "$parent")
    export ICINGA_TRUSTEDCERT
  fi
fi

exec /entrypoint "$@"
