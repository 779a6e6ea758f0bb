#!/usr/bin/env bash
# Proves that one Icinga 2 version runs here the way tests/icinga.py runs nodes: a master
# and a satellite, each in a mount namespace of its own (unshare -m) that bind-mounts the
# node's five directories over the package paths, chrooted into the version's root
# (scripts/icinga_roots.sh) or, for "host", the host's own 2.13. Then: node setup of both,
# the satellite's certificate request WITHOUT a ticket signed on the master with
# `icinga2 ca sign` (the path statesync's enrolment takes), the cluster connection over
# loopback, and the REST API. Prints what it sees; exit 0 when every step passed.
# Usage: scripts/icinga_probe.sh host|trixie|sid [first port, default 15665]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
which=$1 port=${2:-15665}
if [ "$which" = host ]; then root=/; else root="$here/.cache/roots/$which"; fi
[ -x "$root/usr/sbin/icinga2" ] || { echo "no icinga2 in $root: run scripts/icinga_roots.sh $which" >&2; exit 1; }
base=$(mktemp -d "/tmp/icinga-probe-$which-XXXXXX")
session="probe-$$"
pids=()
session_pids() {
  local f
  for f in /proc/[0-9]*/environ; do
    { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -x "E2E_STATESYNC_SESSION=$session" >/dev/null && { f=${f#/proc/}; echo "${f%/environ}"; }
  done
  return 0
}
# Stops like tests/icinga.py's Node.stop: SIGTERM to the pid in the pidfile, then whatever
# of the session is left. Only the pidfile's pid may be signalled: icinga2's worker ignores
# a SIGTERM that does not come from its umbrella process (daemoncommand.cpp).
cleanup() {
  local n p i
  for n in sat master; do
    p=$(cat "$base/$n/run/icinga2.pid" 2>/dev/null || true)
    [ -z "$p" ] || kill "$p" 2>/dev/null || true
  done
  for i in $(seq 1 100); do [ -z "$(session_pids)" ] && break; sleep 0.2; done
  p=$(session_pids)
  if [ -n "$p" ]; then echo "killing leftover pids $p" >&2; kill -9 $p 2>/dev/null || true; fi
  if [ -n "${KEEP:-}" ]; then echo "kept $base" >&2; else rm -rf "$base"; fi
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

# $1 root, $2 node base, rest the command: what tests/icinga.py's _NS_SCRIPT does, plus
# /proc (icinga2 >= 2.14 lists /proc/self/fd at start) and the chroot.
ns_script='
set -e
root=$1 base=$2; shift 2
mount --make-rprivate /
[ -d "$root/run/icinga2" ] || mkdir -p "$root/run/icinga2"
for d in etc:/etc/icinga2 lib:/var/lib/icinga2 log:/var/log/icinga2 cache:/var/cache/icinga2 run:/run/icinga2; do
  mount --bind "$base/${d%%:*}" "$root${d#*:}"
done
if [ "$root" != / ]; then
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  exec chroot "$root" "$@"
fi
exec "$@"
'
in_node() { local n=$1; shift; E2E_STATESYNC_SESSION=$session E2E_STATESYNC_NODE="$session/$n" unshare -m -- sh -c "$ns_script" sh "$root" "$base/$n" "$@"; }

make_node() {
  local n=$1 d
  for d in etc lib log cache run; do mkdir -p "$base/$n/$d"; chown nagios:nagios "$base/$n/$d"; done
  cp -a "$root/etc/icinga2/." "$base/$n/etc/"
}

patch_api() {  # bind the ApiListener to loopback on the node's port
  local f="$base/$1/etc/features-available/api.conf"
  sed -i -E '/^\s*bind_(host|port) = /d; $d' "$f"   # drop the closing brace, then re-add it
  printf '  bind_host = "127.0.0.1"\n  bind_port = %s\n}\n' "$2" >>"$f"
}

wait_port() {
  local i
  for i in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "port $1 never listened" >&2; return 1
}

mport=$port sport=$((port + 1))
start=$(date +%s.%N)
step "version"
in_node probe-version icinga2 --version 2>/dev/null | sed -n 1p || { make_node probe-version; in_node probe-version icinga2 --version | sed -n 1p; }

step "master: node setup --master"
make_node master
in_node master icinga2 node setup --master --cn master --zone master --disable-confd 2>&1 | tail -3
patch_api master "$mport"
printf 'object ApiUser "probe" {\n  password = "probe-pw"\n  permissions = [ "*" ]\n}\nobject ApiUser "limited" {\n  password = "limited-pw"\n  permissions = [ "objects/query/Zone" ]\n}\n' >"$base/master/etc/conf.d/api-users.conf"
chown -R nagios:nagios "$base/master/etc"
echo "features-enabled: $(ls "$base/master/etc/features-enabled" | tr '\n' ' ')"
echo "lib after setup: $(cd "$base/master/lib" && find . -maxdepth 2 | sort | tr '\n' ' ')"
in_node master icinga2 daemon -C >/dev/null 2>&1 && echo "config valid"
in_node master icinga2 daemon -d
wait_port "$mport"
echo "master listens on $mport"

step "satellite: pki save-cert + node setup without a ticket"
make_node sat
mkdir -p "$base/sat/lib/certs"; chown nagios:nagios "$base/sat/lib/certs"
in_node sat icinga2 pki save-cert --host 127.0.0.1 --port "$mport" --trustedcert /var/lib/icinga2/certs/trusted-parent.crt 2>&1 | tail -2
in_node sat icinga2 node setup --cn sat --endpoint "master,127.0.0.1,$mport" --zone sat --parent_zone master \
  --parent_host "127.0.0.1,$mport" --trustedcert /var/lib/icinga2/certs/trusted-parent.crt \
  --accept-config --accept-commands --disable-confd 2>&1 | tail -4
patch_api sat "$sport"
chown -R nagios:nagios "$base/sat/etc"
# NOENDPOINT=1: the master never learns an Endpoint for sat (the request stays anonymous):
# does the signed certificate still reach the satellite?
[ -n "${NOENDPOINT:-}" ] || printf '\nobject Endpoint "sat" {\n}\n\nobject Zone "sat" {\n\tendpoints = [ "sat" ]\n\tparent = "master"\n}\n' >>"$base/master/etc/zones.conf"

step "master: the pending request, ca sign, reload"
in_node master icinga2 ca list --all 2>&1 | tail -3
fp=$(in_node master icinga2 ca list --all --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(next(iter(d)))')
echo "request fingerprint ${fp:0:12}..."
in_node master icinga2 ca sign "$fp" 2>&1 | tail -2
mpid=$(cat "$base/master/run/icinga2.pid")
kill -HUP "$mpid"   # reload: the new Zone/Endpoint for sat

step "satellite: start, fetch its signed certificate, connect"
in_node sat icinga2 daemon -d
wait_port "$sport"
for i in $(seq 1 150); do
  ok=$(curl -sk -u probe:probe-pw "https://127.0.0.1:$mport/v1/objects/endpoints/sat" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["results"]; print(r[0]["attrs"]["connected"])' 2>/dev/null || true)
  [ "$ok" = True ] && break
  sleep 0.2
done
echo "master sees sat connected: ${ok:-no answer}"
if [ -n "${NOENDPOINT:-}" ]; then
  for i in $(seq 1 150); do
    openssl x509 -in "$base/sat/lib/certs/sat.crt" -noout -issuer 2>/dev/null | grep 'Icinga CA' >/dev/null && break; sleep 0.2
  done
fi
openssl x509 -in "$base/sat/lib/certs/sat.crt" -noout -issuer -subject 2>/dev/null || echo "sat has no signed certificate"
step "REST API"
curl -sk -u probe:probe-pw "https://127.0.0.1:$mport/v1/status/IcingaApplication" |
  python3 -c 'import json,sys; a=json.load(sys.stdin)["results"][0]["status"]["icingaapplication"]["app"]; print("version", a["version"], "node", a["node_name"])'
step "REST API: a user without the permission (objects/query/Zone only) asks for endpoints"
curl -sk -u limited:limited-pw -w ' -> HTTP %{http_code}\n' "https://127.0.0.1:$mport/v1/objects/endpoints/master" | cut -c1-300
step "log lines (master)"
grep -hE 'Accepting|certificate request|Endpoint|Received request|signed|Reconnecting|Finished reconnecting|Started|ApiListener|initialized' \
  "$base/master/log/icinga2.log" 2>/dev/null | { grep -v 'no client certificate' || true; } | sed -E 's/^\[[^]]*\] //' | cut -c1-160 | sort | uniq -c | sort -rn | sed -n 1,25p
step "log lines (sat)"
grep -hE 'certificate|Finished reconnecting|Reconnecting|ApiListener|New client|Received' \
  "$base/sat/log/icinga2.log" 2>/dev/null | { cat; true; } | sed -E 's/^\[[^]]*\] //' | cut -c1-160 | sort | uniq -c | sort -rn | sed -n 1,20p
if [ -n "${RENEW:-}" ] && [ "$ok" = True ]; then
  # Icinga >= 2.13.9/2.14.1 (ApiListener::RenewCA, lib/base/tlsutility.cpp IsCaUptodate):
  # a node that holds ca/ca.key re-signs its CA certificate with the same key when it
  # expires within LEAF_VALID_FOR (397 days), at ApiListener start and every 24 h. No
  # clock change needed: replace the CA certificate by one of the same key and subject
  # that expires in 300 days, on the master and on the satellite, and start again.
  step "CA renewal: a 300-day CA of the same key on both nodes, satellite first, then master"
  cleanup_daemons() { local n p; for n in sat master; do p=$(cat "$base/$n/run/icinga2.pid" 2>/dev/null || true); [ -z "$p" ] || kill "$p"; done
    for i in $(seq 1 100); do [ -z "$(session_pids)" ] && break; sleep 0.2; done; }
  cleanup_daemons
  ca="$base/master/lib/ca"
  openssl req -x509 -new -key "$ca/ca.key" -subj "/CN=Icinga CA" -days 300 -set_serial 4242 \
    -addext basicConstraints=critical,CA:TRUE -out "$base/short-ca.crt" 2>/dev/null
  for f in "$ca/ca.crt" "$base/master/lib/certs/ca.crt" "$base/sat/lib/certs/ca.crt"; do
    cp "$base/short-ca.crt" "$f"; chown nagios:nagios "$f"; chmod 644 "$f"
  done
  echo "old CA: $(openssl x509 -in "$base/short-ca.crt" -noout -serial -enddate | tr '\n' ' ')"
  : >"$base/master/log/icinga2.log"; : >"$base/sat/log/icinga2.log"   # this start's lines only
  in_node sat icinga2 daemon -d; wait_port "$sport"
  in_node master icinga2 daemon -d; wait_port "$mport"
  ok=
  for i in $(seq 1 200); do
    c=$(openssl x509 -in "$base/sat/lib/certs/ca.crt" -noout -serial 2>/dev/null || true)
    [ "$c" != serial=1092 ] && [ -n "$c" ] && break   # 4242 = 0x1092
    sleep 0.2
  done
  for f in "$ca/ca.crt" "$base/master/lib/certs/ca.crt" "$base/sat/lib/certs/ca.crt"; do
    echo "${f#$base/}: $(openssl x509 -in "$f" -noout -serial -enddate | tr '\n' ' ') pubkey $(openssl x509 -in "$f" -noout -pubkey | sha256sum | cut -c1-12)"
  done
  for i in $(seq 1 150); do
    ok=$(curl -sk -u probe:probe-pw "https://127.0.0.1:$mport/v1/objects/endpoints/sat" |
      python3 -c 'import json,sys; r=json.load(sys.stdin)["results"]; print(r[0]["attrs"]["connected"])' 2>/dev/null || true)
    [ "$ok" = True ] && break; sleep 0.2
  done
  echo "after renewal, master sees sat connected: ${ok:-no answer}"
  grep -hE 'CA will expire|Renewing|Updating CA|certificate request|uptodate|certificate update' "$base/master/log/icinga2.log" "$base/sat/log/icinga2.log" |
    cut -c1-200
  echo "the satellite's CA file after the wait: $(openssl x509 -in "$base/sat/lib/certs/ca.crt" -noout -serial -enddate | tr '\n' ' ')"
fi
printf '\nelapsed %.1f s\n' "$(echo "$(date +%s.%N) - $start" | bc)"
[ "$ok" = True ] || { [ -n "${NOENDPOINT:-}" ] && openssl x509 -in "$base/sat/lib/certs/sat.crt" -noout -issuer | grep 'Icinga CA' >/dev/null; }
