#!/bin/sh
# PID 1 of a Swarm satellite task: restore this slot's state, pin the parent, then hand
# over to the image's own /entrypoint, still as PID 1 (it initialises /data and runs node
# setup only as PID 1). Node setup runs without a ticket: the request stays pending on the
# master until the sidecar has registered it in Consul and the master's sidecar has signed
# it (docs/ENROL.md). It starts the supervisor rather than Icinga 2 itself, because
# dumb-init (-c) forwards SIGTERM to its one child only: a sidecar started here beside it
# would be killed without its last commit.
set -eu

statesync restore --if-empty
# Before a first enrolment: the parent's certificate, checked against the CA published
# in Consul, for node setup to pin (no-op when the node has its certificates).
statesync pin-parent

if [ ! -s /data/var/lib/icinga2/certs/ca.crt ] && [ -s "${STATESYNC_GUARD_TRUSTED_PARENT_FILE:-}" ]; then
  ICINGA_TRUSTEDCERT=$(cat "$STATESYNC_GUARD_TRUSTED_PARENT_FILE")
  export ICINGA_TRUSTEDCERT
fi
exec /entrypoint /usr/local/bin/statesync-supervise "$@"
