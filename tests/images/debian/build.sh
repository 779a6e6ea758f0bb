#!/usr/bin/env bash
# Stands in for debian:bookworm-slim: a minbase bookworm tree from the machine's own
# Debian mirror, imported as an image. Called by scripts/images.sh with the tag and the
# label to set; the mirror URIs are passed in MIRRORS (one apt line each).
set -euo pipefail
tag=$1 label=$2
mirrors=()
while IFS= read -r line; do [ -n "$line" ] && mirrors+=("$line"); done <<<"$MIRRORS"
# passwd: groupadd/useradd, present in the real slim image and needed by Dockerfiles
# built on the python stand-in. No apt lists or docs: the real image has none either.
mmdebstrap --variant=minbase --quiet --include=passwd \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm - "${mirrors[@]}" |
  /usr/bin/docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL $label" \
    - "$tag" >/dev/null
