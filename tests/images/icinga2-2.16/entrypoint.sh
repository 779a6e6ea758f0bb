#!/bin/bash
# Stand-in for /usr/local/bin/entrypoint.sh of the official icinga/icinga2 image from 2.16 on
# (test-only). Written from the behaviour of tools/container/entrypoint.sh in the Icinga 2
# repository (v2.16.5; docs/ICINGA_VERSIONS.md section 6), not copied from it. Runs under
# "dumb-init -c --" (the image's ENTRYPOINT), as whatever PID; it never copies anything into
# /data (the engine fills an empty volume from the image's VOLUME /data), and:
#   - without arguments: a critical line and exit 1
#   - only when /var/lib/icinga2/certs/ca.crt does not exist (-e: a 0-byte file counts):
#     "icinga2 node setup" from the exported ICINGA_* variables, in the order of their names:
#       ACCEPT_COMMANDS, ACCEPT_CONFIG, DISABLE_CONFD, MASTER  give --accept-commands ... for "1"
#                                 only, yet trigger node setup whatever their value;
#       GLOBAL_ZONES              "a,b" gives --global_zones a --global_zones b;
#       CN, ENDPOINT, LISTEN, PARENT_HOST, PARENT_ZONE, ZONE, TICKET
#                                 give --cn value ... (underscores kept: --parent_host),
#                                 an empty value included;
#       TRUSTEDCERT               a PEM, written to /tmp/trusted.cert.XXXXXXXX (0644), --trustedcert;
#       CACERT                    a PEM, written to certs/ca.crt (0644) before node setup,
#                                 even when empty (a 0-byte ca.crt stops node setup for good);
#       LOG_LEVEL                 no node setup; see below;
#       any other                 a warning, ignored.
#     A failing node setup ends the script (set -e), so the container exits non-zero.
#   - MSMTPRC (non-empty) is written to /var/lib/icinga2/.msmtprc (0644) only if that is absent
#   - with ICINGA_LOG_LEVEL set (even empty) and a command whose base name is icinga2, that
#     command gets "--log-level <value>" appended
#   - log lines "[date] severity/DockerEntrypoint: message" on stderr
# Not reproduced: the colours upstream adds when stderr is a terminal.
set -eo pipefail

ca=/var/lib/icinga2/certs/ca.crt

say() {
  printf '[%s] %s/DockerEntrypoint: %s\n' "$(date +'%Y-%m-%d %H:%M:%S %z')" "$1" "$2" >&2
}

if [ "$#" = 0 ]; then
  say critical "Icinga 2 Docker entrypoint script requires at least one command to run."
  exit 1
fi
say information "Icinga 2 Docker entrypoint script started."

if [ ! -e "$ca" ]; then
  args=(node setup)
  wanted=false
  for var in $(compgen -A export ICINGA_ || true); do
    opt=${var#ICINGA_}
    opt=${opt,,}
    val=${!var}
    case $opt in
      accept_commands|accept_config|disable_confd|master)
        wanted=true
        [ "$val" != 1 ] || args+=("--${opt//_/-}")
        ;;
      global_zones)
        wanted=true
        IFS=, read -ra parts <<<"$val"
        for part in "${parts[@]}"; do args+=(--global_zones "$part"); done
        ;;
      cn|endpoint|listen|parent_host|parent_zone|zone|ticket)
        wanted=true
        args+=("--$opt" "$val")
        ;;
      trustedcert)
        say information "Writing trusted certificate to temporary file."
        wanted=true
        pem=$(mktemp /tmp/trusted.cert.XXXXXXXX)
        printf '%s' "$val" >"$pem"
        args+=(--trustedcert "$pem")
        chmod 0644 "$pem"
        ;;
      cacert)
        say information "Writing CA certificate to $ca."
        wanted=true
        printf '%s' "$val" >"$ca"
        chmod 0644 "$ca"
        ;;
      log_level) ;;
      *) say warning "Ignoring unknown environment variable $var" ;;
    esac
  done
  if $wanted; then
    say information "Running Icinga 2 node setup command..."
    icinga2 "${args[@]}"
    say information "Node setup completed successfully."
  else
    say information "No node setup required based on environment variables."
  fi
fi

msmtprc=/var/lib/icinga2/.msmtprc
if [ ! -e "$msmtprc" ] && [ -n "${MSMTPRC:-}" ]; then
  say information "Configuring msmtp with the provided MSMTPRC environment variable."
  printf '%s' "$MSMTPRC" >"$msmtprc"
  chmod 0644 "$msmtprc"
fi

say information "Finished Icinga 2 Docker entrypoint script."

if [ -n "${ICINGA_LOG_LEVEL+set}" ] && [ "$(basename -- "$1")" = icinga2 ]; then
  say information "Launching Icinga 2 in \"$ICINGA_LOG_LEVEL\" log level."
  exec "$@" --log-level "$ICINGA_LOG_LEVEL"
fi
exec "$@"
