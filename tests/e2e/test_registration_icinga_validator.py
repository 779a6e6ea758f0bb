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
# the host's untouched
_NS = """
set -e
mount --make-rprivate /
for d in /var/cache/icinga2 /var/lib/icinga2 /var/log/icinga2 /run/icinga2; do
  [ -d "$d" ] || mkdir -p "$d"
  mount -t tmpfs -o mode=1777 tmpfs "$d"
done
exec "$@"
"""


def _validate(files: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    binary = icinga2_binary()
    problem = "icinga2 is not installed" if binary is None else unshare_problem()
    if problem:
        pytest.fail(problem)
    (tmp_path / "icinga2.conf").write_text(_MASTER)
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    for d in [tmp_path, *tmp_path.rglob("*")]:
        d.chmod(0o755 if d.is_dir() else 0o644)
    return subprocess.run(["unshare", "-m", "--", "sh", "-c", _NS, "sh", binary, "daemon", "-C",
                           "-c", str(tmp_path / "icinga2.conf")],
                          check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.e2e  # runs the real icinga2 daemon -C
def test_the_real_icinga_validator_accepts_the_rendered_config():
    files = reg.render(RENDERED + [_reg("sat4", "sat4", parent_zone="master", host="10.0.0.4")])
    # not pytest's tmp_path: its parent is private to root, and Icinga 2 reads as its own user
    with tempfile.TemporaryDirectory(prefix="statesync-registration-") as tmp:
        proc = _validate(files, Path(tmp))
    assert proc.returncode == 0, proc.stdout[-2000:]
    # master1 and four satellites: the rendered files were read, not skipped
    assert "Instantiated 5 Endpoints" in proc.stdout and "Instantiated 5 Zones" in proc.stdout
