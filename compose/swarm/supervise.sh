#!/bin/bash
# Runs Icinga 2 and the statesync sidecar side by side under dumb-init's single child
# (dumb-init -c forwards a signal to its one child only, so both must live below this
# script for a stop to reach both).
#
# A stop signal (docker stop, a Swarm task stop or update) stops Icinga 2 first and the
# sidecar only after Icinga 2 has exited, as compose stops the master's icinga2 container
# before the statesync one it depends on: Icinga 2 writes its program state
# (icinga2.state) while shutting down, and the sidecar, which commits a change once it
# has settled (debounce) but does not commit pending changes when it is stopped, gets
# STATESYNC_SUPERVISE_SETTLE seconds (default 3) to commit that last write.
# When Icinga 2 exits on its own (the guard's restart trigger signals it), the sidecar is
# stopped the same way, so that Swarm restarts the whole task and the entrypoint enrols
# again. When the sidecar exits, Icinga 2 is stopped so that the task restarts whole.
# With enrolment on (docs/ENROL.md), a pending certificate request (a new slot, or one the
# guard sent to enrol again) is registered and fetched signed with `statesync enrol --wait`
# (it runs `icinga2 pki request`) before Icinga 2 starts, so that it connects at once rather
# than at its second 10 s retry; after STATESYNC_SUPERVISE_ENROL_WAIT seconds (60) Icinga 2
# starts anyway and keeps asking by itself.
# ICINGA_LOG_LEVEL: the 2.16 image's entrypoint appends --log-level only when its command is
# icinga2 itself, and its command is this script: Icinga 2 gets it here instead.
set -u
first=${1:-}
if [ -n "${ICINGA_LOG_LEVEL:-}" ] && [ "${first##*/}" = icinga2 ]; then
  set -- "$@" --log-level "$ICINGA_LOG_LEVEL"
fi
settle=${STATESYNC_SUPERVISE_SETTLE:-3}
statesync run &
sidecar=$!
icinga="" enrolling="" stopping=0
trap 'stopping=1; kill -TERM ${enrolling:-} ${icinga:-} 2>/dev/null' TERM INT
case ${STATESYNC_ENROL_ENABLED:-} in
  1|true|yes|on)
    statesync enrol --wait "${STATESYNC_SUPERVISE_ENROL_WAIT:-60}" >&2 &
    enrolling=$!
    # A trapped signal interrupts wait: keep waiting while enrol runs (it got the signal too).
    while kill -0 "$enrolling" 2>/dev/null; do
      wait "$enrolling" || true
    done
    enrolling=""
    ;;
esac
status=0
sidecar_running=1
if [ "$stopping" = 0 ]; then
  "$@" &
  icinga=$!
fi
while [ -n "$icinga" ]; do
  done_pid=""
  wait -n -p done_pid
  rc=$?
  # wait -p unsets done_pid when a trapped signal interrupts the wait: under set -u a bare
  # "$done_pid" would then end this script at once, and the container with it, before the
  # sidecar could make its last commit.
  if [ "${done_pid:-}" = "$icinga" ]; then
    status=$rc
    break
  fi
  if [ "${done_pid:-}" = "$sidecar" ]; then
    sidecar_running=0
    echo "statesync-supervise: the sidecar exited ($rc); stopping Icinga 2 so that the task restarts whole" >&2
    kill -TERM "$icinga" 2>/dev/null
  fi
  # otherwise a trapped signal interrupted the wait: keep waiting for Icinga 2 to end
done
if [ "$sidecar_running" = 1 ]; then
  echo "statesync-supervise: Icinga 2 exited ($status); stopping the sidecar in ${settle}s, after its last commit" >&2
  sleep "$settle"
  kill -TERM "$sidecar" 2>/dev/null
  # A second signal interrupts wait: keep waiting while the sidecar runs.
  while kill -0 "$sidecar" 2>/dev/null; do
    wait "$sidecar"
  done
fi
exit "$status"
