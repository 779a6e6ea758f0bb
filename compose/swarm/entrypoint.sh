#!/bin/sh
# Restore this slot's state before Icinga 2 starts, run the sidecar beside it, then
# hand over to the image's own entrypoint (which enrols when no certificate exists).
set -eu
/opt/statesync/bin/statesync restore --if-empty
if [ ! -e "$STATESYNC_ROOT/certs/$ICINGA_CN.crt" ] && [ -r "${TICKET_SALT_FILE:-}" ]; then
  # A ticket is PBKDF2-HMAC-SHA1(cn, TicketSalt, 50000), as `icinga2 pki ticket` computes it.
  ICINGA_TICKET=$(/opt/statesync/bin/python -c 'import hashlib,os,sys; salt=open(os.environ["TICKET_SALT_FILE"]).read().strip(); print(hashlib.pbkdf2_hmac("sha1", os.environ["ICINGA_CN"].encode(), salt.encode(), 50000).hex())')
  export ICINGA_TICKET
fi
/opt/statesync/bin/statesync run &
exec /entrypoint "$@"
