#!/bin/sh
# PID 1 of a Swarm satellite task: restore this slot's state, pin the parent, then hand
# over to the image's own entrypoint: up to 2.15 /entrypoint, still as PID 1 (it initialises
# /data from /data-init and runs node setup only as PID 1); from 2.16 on
# /usr/local/bin/entrypoint.sh under "dumb-init -c --", as that image's ENTRYPOINT runs it
# (its /data came into the slot's new volume through the engine, VOLUME /data, before this
# script ran: the restore replaces those defaults). Node setup runs without a ticket: the
# request stays pending on the master until the sidecar has registered it in Consul and the
# master's sidecar has signed it (docs/ENROL.md). It starts the supervisor rather than
# Icinga 2 itself, because dumb-init (-c) forwards SIGTERM to its one child only: a sidecar
# started here beside it would be killed without its last commit.
set -eu

statesync restore --if-empty
# Before a first enrolment: the parent's certificate, checked against the CA published
# in Consul, for node setup to pin (no-op when the node has its certificates).
statesync pin-parent

if [ ! -s /data/var/lib/icinga2/certs/ca.crt ] && [ -s "${STATESYNC_GUARD_TRUSTED_PARENT_FILE:-}" ]; then
  ICINGA_TRUSTEDCERT=$(cat "$STATESYNC_GUARD_TRUSTED_PARENT_FILE")
  export ICINGA_TRUSTEDCERT
fi
if [ -x /entrypoint ]; then
  exec /entrypoint /usr/local/bin/statesync-supervise "$@"
fi
exec /usr/bin/dumb-init -c -- /usr/local/bin/entrypoint.sh /usr/local/bin/statesync-supervise "$@"
