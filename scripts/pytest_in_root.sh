#!/usr/bin/env bash
# Runs pytest on this worktree inside a root of scripts/icinga_roots.sh, with that root's
# Python and Icinga 2: trixie = Python 3.13 + Icinga 2.14, sid = sid's Python + Icinga 2.16.
# Makes a venv in the root once per set of dependencies: /opt/venv-<key>, statesync's
# dependencies and test extras from PyPI (statesync itself comes from the worktree through
# PYTHONPATH). <key> is the hash of pyproject.toml's dependency lists, so a changed or added
# dependency gets a venv of its own at the next run; a venv still in use by another run is
# never replaced under it (old ones stay until the root is rebuilt: rm -rf .cache/roots).
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
# What pip installs: [project] dependencies and [project.optional-dependencies] (sed, so that
# the host needs no Python of its own for it).
key=$(sed -n '/^dependencies = \[/,/^\]/p; /^\[project.optional-dependencies\]/,/^\[/p' "$here/pyproject.toml" \
      | sha256sum | cut -c1-16)
venv=/opt/venv-$key
# The mount point for the root's own .venv (see below); removed again when made here.
made_venv_dir=
[ -e "$here/.venv" ] || { mkdir "$here/.venv"; made_venv_dir=1; }
rc=0
# shellcheck disable=SC2016
unshare -m -- sh -c '
set -e
root=$1 src=$2 cache=$3 venv=$4; shift 4
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
exec chroot "$root" env -i PATH=$venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 VENV=$venv \
  PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt SSL_CERT_FILE=/etc/ssl/certs/host-ca-bundle.crt \
  PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/src E2E_ICINGA_VERSIONS="${E2E_ICINGA_VERSIONS:-}" sh -c "
set -e
if ! [ -f \$VENV/.installed ]; then
  # One run builds it; another one started meanwhile waits here, then finds it made.
  exec 9>\$VENV.lock
  flock 9
  if ! [ -f \$VENV/.installed ]; then
    echo \"pytest_in_root: making \$VENV, the dependencies of statesync from PyPI\" >&2
    python3 -m venv --clear \$VENV
    mkdir /tmp/statesync-src
    tar -C /src --exclude=./.cache --exclude=./.venv --exclude=./.git -cf - . | tar -C /tmp/statesync-src -xf -
    # each its own command, so that set -e stops the run when pip fails
    \$VENV/bin/pip install -q \"/tmp/statesync-src[test]\"
    \$VENV/bin/pip uninstall -q -y statesync
    touch \$VENV/.installed
  fi
  exec 9>&-
fi
cd /src && exec \$VENV/bin/python -m pytest \"\$@\"
" sh "$@"
' sh "$root" "$here" "$(readlink -f "$here/.cache")" "$venv" "${args[@]}" || rc=$?
[ -z "$made_venv_dir" ] || rmdir "$here/.venv" 2>/dev/null || true
exit "$rc"
