#!/bin/sh
# Entrypoint wrapper for the official icinga/icinga2 image, both of its layouts:
# - up to 2.15 (Icinga/docker-icinga2): the Go /entrypoint, which as PID 1 copies /data-init
#   into /data and runs node setup; it is exec'd as PID 1;
# - from 2.16 on (Icinga 2's own Containerfile): /usr/local/bin/entrypoint.sh under
#   "dumb-init -c --" (the image's ENTRYPOINT, which this wrapper replaces), node setup only;
#   /data came from the image through the engine (VOLUME /data).
# Mounted read-only into the icinga2 container by the stacks in this directory; it ends by
# exec'ing the image's own entrypoint, so the image's first-start logic runs unchanged.
#
# Why each step:
# - Icinga must not start before statesync has restored the volume: a master that starts
#   on an empty volume makes a new CA. Compose ordering alone is not enough
#   (podman-compose 1.0.3 ignores depends_on conditions), so wait for the ready marker
#   that statesync writes once its start-up restore is done.
# - The entrypoint hands a set-but-empty ICINGA_* variable on as a value: an empty
#   ICINGA_CACERT becomes a 0-byte certs/ca.crt, after which node setup never runs again.
#   Unset empty ones, and remove such a 0-byte ca.crt left by an earlier start.
# - A satellite enrols without a ticket (docs/ENROL.md): node setup leaves its request
#   pending on the master, and the sidecars register, accept and sign it through Consul.
#   It pins the parent certificate that statesync checked against the CA published in
#   Consul, not one fixed in the environment, which is stale after a CA change.
# - A second stage of this script runs after the image's own first start (node setup; up
#   to 2.15 also the copy of /data-init into what /data lacks), as the entrypoint's command:
#   - with STATESYNC_API_USER (the master), it writes the sidecar's ApiUser, with the
#     permissions enrolment needs and the password of the icinga_api_password secret;
#   - on a satellite whose certificate is still a pending request, it asks the parent with
#     `icinga2 pki request` (no ticket) until statesync has had it signed, for at most
#     ICINGA_START_ENROL_WAIT seconds (60): Icinga 2 then starts with its certificate and
#     connects at once, instead of at its second 10 s retry after the signature;
#   - with ICINGA_LOG_LEVEL, Icinga 2 gets --log-level: the 2.16 entrypoint adds it only when
#     its command is icinga2 itself, and here its command is this script's second stage;
#   - with STATESYNC_HA_MASTERS (an HA master zone, compose/README.md), it writes zones.conf at
#     every start: both masters in zone "master", and on a satellite its own zone below it.
#     node setup can only write one parent Endpoint, and on the second master it writes zone
#     "master" twice (its own and its parent's), which Icinga 2 refuses to load; here the file
#     is replaced after node setup, before Icinga 2 ever reads it.
set -eu

pending() {  # the node certificate is its own issuer: node setup's request, not signed yet
  [ -s "$1" ] || return 1
  subject=$(openssl x509 -noout -subject -nameopt RFC2253 -in "$1" 2>/dev/null) || return 1
  issuer=$(openssl x509 -noout -issuer -nameopt RFC2253 -in "$1" 2>/dev/null) || return 1
  [ "${subject#subject=}" = "${issuer#issuer=}" ]
}

# zones.conf of an HA master zone from "name[,host[,port]] ..." (ICINGA_ENDPOINT's form; the
# host defaults to the name, the port to 5665). Every name and host is checked before it is
# written into Icinga 2's configuration.
ha_zones() (  # a subshell: set -f keeps a * in the list from matching files
  set -f
  masters=$1 cn=$2
  endpoints="" members="" own=false
  for entry in $masters; do
    name=${entry%%,*} rest=${entry#"$name"}
    rest=${rest#,} host=${rest%%,*} port=${rest#"$host"}
    port=${port#,}
    host=${host:-$name} port=${port:-5665}
    case "$name$host" in *[!A-Za-z0-9._-]*|'') return 1 ;; esac
    case "$port" in *[!0-9]*|'') return 1 ;; esac
    endpoints="${endpoints}object Endpoint \"$name\" { host = \"$host\"; port = \"$port\" }
"
    members="${members:+$members, }\"$name\""
    [ "$name" != "$cn" ] || own=true
  done
  [ -n "$members" ] || return 1
  printf '%s\n' "// Written by icinga-start.sh at every start from STATESYNC_HA_MASTERS: edits here are lost."
  printf '%s' "$endpoints"
  printf 'object Zone "master" { endpoints = [ %s ] }\n' "$members"
  if ! $own; then
    zone=${ICINGA_ZONE:-$cn}
    case "$cn$zone" in *[!A-Za-z0-9._-]*) return 1 ;; esac
    printf 'object Endpoint "%s" { }\n' "$cn"
    printf 'object Zone "%s" { endpoints = [ "%s" ]; parent = "master" }\n' "$zone" "$cn"
  fi
  printf '%s\n' 'object Zone "global-templates" { global = true }' 'object Zone "director-global" { global = true }'
)

if [ "${1:-}" = "--then" ]; then
  shift
  if [ -n "${STATESYNC_HA_MASTERS:-}" ]; then
    zones=/etc/icinga2/zones.conf
    if ! ha_zones "$STATESYNC_HA_MASTERS" "${ICINGA_CN:-$(hostname)}" >"$zones.tmp"; then
      rm -f "$zones.tmp"
      echo "icinga-start: STATESYNC_HA_MASTERS must be names of the zone's masters, each name[,host[,port]], separated by spaces, of letters, digits, '.', '_' and '-'; not starting Icinga 2" >&2
      exit 1
    fi
    mv "$zones.tmp" "$zones"
    echo "icinga-start: wrote $zones for the HA master zone: $STATESYNC_HA_MASTERS" >&2
  fi
  if [ -n "${STATESYNC_API_USER:-}" ]; then
    secret=${STATESYNC_API_PASSWORD_FILE:-/run/secrets/icinga_api_password}
    if [ ! -r "$secret" ]; then
      echo "icinga-start: STATESYNC_API_USER is set but $secret is not readable; not starting Icinga 2" >&2
      exit 1
    fi
    password=$(tr -d '\r\n' <"$secret")
    case $password in
      *'"'*|*'\'*|*'$'*|'') echo "icinga-start: $secret is empty or holds a quote, backslash or \$" >&2; exit 1 ;;
    esac
    conf=/etc/icinga2/statesync-api-user.conf
    (umask 027
     printf '%s\n' "// Written by icinga-start.sh at every start: statesync's sidecar stages accepted satellites." \
       "object ApiUser \"$STATESYNC_API_USER\" {" "  password = \"$password\"" \
       '  permissions = [ "config/query", "config/modify", "objects/query/Endpoint", "objects/query/Zone" ]' "}" >"$conf.tmp")
    mv "$conf.tmp" "$conf"
    if ! grep -qx 'include "statesync-api-user.conf"' /etc/icinga2/icinga2.conf; then
      printf '\ninclude "statesync-api-user.conf"\n' >>/etc/icinga2/icinga2.conf
    fi
  fi
  certs=/var/lib/icinga2/certs
  cn=${ICINGA_CN:-$(hostname)}
  parent=${ICINGA_PARENT_HOST:-}
  trusted=${STATESYNC_GUARD_TRUSTED_PARENT_FILE:-}
  if [ -n "$parent" ] && [ -s "$trusted" ] && pending "$certs/$cn.crt"; then
    host=${parent%%,*} port=${parent#*,}
    [ "$port" != "$parent" ] || port=5665
    limit=${ICINGA_START_ENROL_WAIT:-60} waited=0
    echo "icinga-start: the certificate request of $cn is pending; asking $host:$port until statesync has it signed (at most ${limit}s)" >&2
    while pending "$certs/$cn.crt" && [ "$waited" -lt "$limit" ]; do
      icinga2 pki request --host "$host" --port "$port" --ticket "" --key "$certs/$cn.key" \
        --cert "$certs/$cn.crt" --trustedcert "$trusted" --ca "$certs/ca.crt" >/dev/null 2>&1 || true
      pending "$certs/$cn.crt" || break
      sleep 1
      waited=$((waited + 1))
    done
    if pending "$certs/$cn.crt"; then
      echo "icinga-start: not signed within ${limit}s; Icinga 2 starts and keeps asking by itself" >&2
    else
      echo "icinga-start: certificate of $cn signed after ${waited}s" >&2
    fi
  fi
  if [ -n "${ICINGA_LOG_LEVEL:-}" ] && [ "${1##*/}" = icinga2 ]; then
    exec "$@" --log-level "$ICINGA_LOG_LEVEL"
  fi
  exec "$@"
fi

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

if [ -x /entrypoint ]; then
  exec /entrypoint /bin/sh "$0" --then "$@"
fi
if [ -x /usr/local/bin/entrypoint.sh ] && [ -x /usr/bin/dumb-init ]; then
  exec /usr/bin/dumb-init -c -- /usr/local/bin/entrypoint.sh /bin/sh "$0" --then "$@"
fi
echo "icinga-start: this image has neither /entrypoint (icinga/icinga2 up to 2.15) nor /usr/local/bin/entrypoint.sh and dumb-init (2.16 on); not starting Icinga 2" >&2
exit 1
