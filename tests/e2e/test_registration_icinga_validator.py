"""The rendered registration package, read by the real icinga2 (daemon -C): split from
tests/unit/test_unit_registration.py, whose other tests need nothing but Python."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from statesync.enrol import registration as reg

from ..icinga import icinga2_binary, unshare_problem
from ..unit.test_unit_registration import RENDERED, _reg

# --- the real validator ----------------------------------------------------------------------------

_MASTER = """\
object Endpoint "master1" { }
object Zone "master" { endpoints = [ "master1" ] }
object Zone "global-templates" { global = true }
include_zones "statesync", "zones.d"
"""

# Icinga 2 writes its cache and state below /var; tmpfs there, in a namespace of its own, keeps
# the host's untouched. $1 is the root of the Icinga 2 version ("" = the host's: tests/icinga.py),
# $2 the directory with the files to validate, seen in a root as /mnt/conf (not as /etc/icinga2:
# Icinga 2 reads /etc/icinga2/zones.d by itself as well, and would find each object twice).
_NS = """
set -e
root=$1 conf=$2; shift 2
mount --make-rprivate /
for d in /var/cache/icinga2 /var/lib/icinga2 /var/log/icinga2 /run/icinga2; do
  [ -d "$root$d" ] || mkdir -p "$root$d"
  mount -t tmpfs -o mode=1777 tmpfs "$root$d"
done
if [ -n "$root" ]; then
  mount -t tmpfs tmpfs "$root/mnt"
  mkdir "$root/mnt/conf"
  mount --bind "$conf" "$root/mnt/conf"
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  exec chroot "$root" "$@"
fi
exec "$@"
"""


def _validate(files: dict[str, str], tmp_path: Path, root: str) -> subprocess.CompletedProcess:
    binary = "/usr/sbin/icinga2" if root else icinga2_binary()
    problem = "icinga2 is not installed" if binary is None else unshare_problem()
    if problem:
        pytest.fail(problem)
    (tmp_path / "icinga2.conf").write_text(_MASTER)
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    for d in [tmp_path, *tmp_path.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    return subprocess.run(["unshare", "-m", "--", "sh", "-c", _NS, "sh", root, str(tmp_path), binary, "daemon", "-C",
                           "-c", f"{'/mnt/conf' if root else tmp_path}/icinga2.conf"],
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.e2e  # runs the real icinga2 daemon -C, of each version of the matrix (tests/e2e/conftest.py)
def test_the_real_icinga_validator_accepts_the_rendered_config(icinga_root):
    files = reg.render(RENDERED + [_reg("sat4", "sat4", parent_zone="master", host="10.0.0.4")])
    # not pytest's tmp_path: its parent is private to root, and Icinga 2 reads as its own user
    with tempfile.TemporaryDirectory(prefix="statesync-registration-") as tmp:
        proc = _validate(files, Path(tmp), icinga_root)
    assert proc.returncode == 0, proc.stdout[-2000:]
    # master1 and four satellites: the rendered files were read, not skipped
    assert "Instantiated 5 Endpoints" in proc.stdout and "Instantiated 5 Zones" in proc.stdout
