#!/usr/bin/env bash
# Runs pytest on this worktree inside a root of scripts/icinga_roots.sh, with that root's
# Python and Icinga 2: trixie = Python 3.13 + Icinga 2.14, sid = sid's Python + Icinga 2.16.
# Makes .cache/roots/<suite>/opt/venv once: a venv with statesync's dependencies and test
# extras from PyPI (statesync itself comes from the worktree through PYTHONPATH).
# The worktree is bind-mounted at /src in a private mount namespace, so the root is not
# changed by a test run. pip trusts the host's CA bundle (the machine's intercepting
# proxy; TEST-ONLY, as for tests/images/python) copied into the root.
# Usage: scripts/pytest_in_root.sh trixie|sid [pytest args...]   (default: the unit tier)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=${1:?usage: scripts/pytest_in_root.sh trixie|sid [pytest args...]}; shift
root="$here/.cache/roots/$suite"
[ -x "$root/usr/bin/python3" ] || { echo "no $suite root with python3: run scripts/icinga_roots.sh $suite" >&2; exit 1; }
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/host-ca-bundle.crt"
mkdir -p "$root/src"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-q -m "not consul and not engine and not e2e" -p no:cacheprovider)
# The mount point for the root's own .venv (see below); removed again when made here.
made_venv_dir=
[ -e "$here/.venv" ] || { mkdir "$here/.venv"; made_venv_dir=1; }
rc=0
# shellcheck disable=SC2016
unshare -m -- sh -c '
set -e
root=$1 src=$2 cache=$3; shift 3
mount --make-rprivate /
# The root must be a mount point of its own: tests/icinga.py runs `unshare -m` and
# `mount --make-rprivate /` inside it, which fails ("Invalid argument") on a plain chroot.
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind "$src" "$root/src"
# scripts/setup.sh (run by tests/test_setup_script.py) makes $src/.venv: keep that venv in
# the root, one per root, never in the worktree (a 3.13 venv there breaks the 3.14 run).
mkdir -p "$root/opt/src-venv"
mount --bind "$root/opt/src-venv" "$root/src/.venv"
# A worktree whose .cache is a symlink (to the main checkout) sees it at the same path.
if [ "$cache" != "$src/.cache" ]; then mkdir -p "$root$cache"; mount --bind "$cache" "$root$cache"; fi
mount -t tmpfs tmpfs "$root/tmp"
exec chroot "$root" env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/src sh -c "
set -e
[ -x /opt/venv/bin/python ] || python3 -m venv /opt/venv
if ! [ -f /opt/venv/.installed ]; then
  mkdir /tmp/statesync-src && tar -C /src --exclude=./.cache --exclude=./.venv --exclude=./.git -cf - . | tar -C /tmp/statesync-src -xf -
  /opt/venv/bin/pip install -q \"/tmp/statesync-src[test]\" && /opt/venv/bin/pip uninstall -q -y statesync && touch /opt/venv/.installed
fi
cd /src && exec /opt/venv/bin/python -m pytest \"\$@\"
" sh "$@"
' sh "$root" "$here" "$(readlink -f "$here/.cache")" "${args[@]}" || rc=$?
[ -z "$made_venv_dir" ] || rmdir "$here/.venv" 2>/dev/null || true
exit "$rc"
