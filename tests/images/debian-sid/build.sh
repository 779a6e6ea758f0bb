#!/usr/bin/env bash
# Stands in for debian:sid-slim: a minbase sid tree from the machine's own Debian mirror,
# imported as an image; the base of the Icinga 2 2.16 stand-in (sid is the suite that
# carries 2.16). Called by scripts/images.sh with the tag and the label to set; the
# mirror's apt line is passed in MIRRORS.
# The machine's mirror is a frozen copy: sid's Release is valid for a week only, so apt
# refuses it once that week has passed ("is expired"). The signature is still checked,
# only the expiry is not: mmdebstrap keeps the option in the image
# (/etc/apt/apt.conf.d/99mmdebstrap), so an apt-get update in a build on it works too.
set -euo pipefail
tag=$1 label=$2
mirrors=()
while IFS= read -r line; do [ -n "$line" ] && mirrors+=("$line"); done <<<"$MIRRORS"
mmdebstrap --variant=minbase --quiet --include=passwd \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Check-Valid-Until "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  sid - "${mirrors[@]}" |
  /usr/bin/docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL $label" \
    - "$tag" >/dev/null
