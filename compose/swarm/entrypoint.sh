#!/bin/sh
# PID 1 of a Swarm satellite task: restore this slot's state, pin the parent, pick this
# slot's ticket, then hand over to the image's own /entrypoint, still as PID 1 (it
# initialises /data and runs node setup only as PID 1). It starts the supervisor rather
# than Icinga 2 itself, because dumb-init (-c) forwards SIGTERM to its one child only: a
# sidecar started here beside it would be killed without its last commit.
set -eu

statesync restore --if-empty
# Before a first enrolment: the parent's certificate, checked against the CA published
# in Consul, for node setup to pin (no-op when the node has its certificates).
statesync pin-parent

if [ ! -s /data/var/lib/icinga2/certs/ca.crt ] && [ -r "${ICINGA_TICKETS_FILE:-/run/secrets/icinga_tickets}" ]; then
  # One line per satellite, "<cn> <ticket>" (icinga2 pki ticket --cn <cn> on the master):
  # each task reads its own; no task ever sees the TicketSalt.
  ICINGA_TICKET=$(awk -v cn="$ICINGA_CN" '$1 == cn { print $2 }' "${ICINGA_TICKETS_FILE:-/run/secrets/icinga_tickets}")
  if [ -z "$ICINGA_TICKET" ]; then
    echo "statesync-entrypoint: no ticket for $ICINGA_CN in the tickets secret" >&2
    exit 1
  fi
  export ICINGA_TICKET
  if [ -s "${STATESYNC_GUARD_TRUSTED_PARENT_FILE:-}" ]; then
    ICINGA_TRUSTEDCERT=$(cat "$STATESYNC_GUARD_TRUSTED_PARENT_FILE")
    export ICINGA_TRUSTEDCERT
  fi
fi
exec /entrypoint /usr/local/bin/statesync-supervise "$@"
