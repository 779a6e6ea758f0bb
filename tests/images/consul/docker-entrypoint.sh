#!/bin/sh
# Stand-in for the docker-entrypoint.sh of hashicorp/consul:1.8.7, reduced to what
# compose files rely on: a leading flag means "agent"; "agent" gets -data-dir and
# -config-dir of the image; CONSUL_LOCAL_CONFIG becomes a config file;
# CONSUL_BIND_INTERFACE / CONSUL_CLIENT_INTERFACE become -bind / -client; other
# consul subcommands pass through; the agent drops root to the consul user.
# Not reproduced: CONSUL_ALLOW_PRIVILEGED_PORTS (setcap), the chown of a data dir
# mounted with foreign ownership when it is not writable (done always here, as root).
set -e

addr_of() {
  ip -o -4 addr list "$1" 2>/dev/null | head -n1 | awk '{print $4}' | cut -d/ -f1
}

bind=
if [ -n "$CONSUL_BIND_INTERFACE" ]; then
  a=$(addr_of "$CONSUL_BIND_INTERFACE")
  [ -n "$a" ] || { echo "Could not find IP for interface '$CONSUL_BIND_INTERFACE', exiting"; exit 1; }
  bind="-bind=$a"
fi
client=
if [ -n "$CONSUL_CLIENT_INTERFACE" ]; then
  a=$(addr_of "$CONSUL_CLIENT_INTERFACE")
  [ -n "$a" ] || { echo "Could not find IP for interface '$CONSUL_CLIENT_INTERFACE', exiting"; exit 1; }
  client="-client=$a"
fi

CONSUL_DATA_DIR=/consul/data
CONSUL_CONFIG_DIR=/consul/config
if [ -n "$CONSUL_LOCAL_CONFIG" ]; then
  echo "$CONSUL_LOCAL_CONFIG" >"$CONSUL_CONFIG_DIR/local.json"
fi

if [ "${1#-}" != "$1" ]; then
  set -- consul agent "$@"
fi
if [ "$1" = agent ]; then
  shift
  # shellcheck disable=SC2086  # empty bind/client must vanish
  set -- consul agent -data-dir="$CONSUL_DATA_DIR" -config-dir="$CONSUL_CONFIG_DIR" $bind $client "$@"
elif [ "$1" = version ]; then
  set -- consul "$@"
elif consul --help "$1" 2>&1 | grep -q "consul $1"; then
  set -- consul "$@"
fi

if [ "$1" = consul ] && [ "$(id -u)" = 0 ] && [ -z "$SKIP_CHOWN" ]; then
  chown -R consul:consul "$CONSUL_DATA_DIR" "$CONSUL_CONFIG_DIR" 2>/dev/null || true
  set -- setpriv --reuid=consul --regid=consul --init-groups "$@"
fi
exec "$@"
