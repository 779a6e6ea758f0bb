"""Failures that used to be silent are loud: an unreadable file, and excludes that dropped the defaults.

Root reads mode-000 files, so the processes that must not be able to read one run as an
unprivileged user (uid 65534 through setpriv), as the sidecar does in production (uid 5665).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..sidecar import statesync_env
from ..support import REPO, free_ports, http_get, plain_lines, statesync_cmd, stop_process, wait_for

NOBODY = 65534


# --- pure logic ---------------------------------------------------------------------------

def test_an_os_error_below_the_root_is_named_by_its_path_relative_to_the_root():
    from statesync.errors import UnreadablePath
    exc = PermissionError(13, "Permission denied", "/var/lib/icinga2/ca/ca.key")
    err = UnreadablePath.from_os_error(exc, Path("/var/lib/icinga2"))
    assert (err.path, str(err)) == ("ca/ca.key", "cannot read ca/ca.key: Permission denied")


def test_an_os_error_on_the_root_itself_or_outside_it_keeps_the_absolute_path():
    from statesync.errors import UnreadablePath
    for name in ("/var/lib/icinga2", "/etc/other"):
        err = UnreadablePath.from_os_error(PermissionError(13, "Permission denied", name), "/var/lib/icinga2")
        assert err.path == name


def _state(failures: int, error: str = "cannot read ca/ca.key: Permission denied", consul_away: bool = False):
    from statesync.sidecar.daemon import DaemonState
    return DaemonState(consecutive_failures=failures, last_error=error, consul_away=consul_away)


def test_health_stays_ok_while_fewer_cycles_than_max_failures_have_failed_in_a_row():
    assert _state(0).failing(5) == "" and _state(4).failing(5) == ""


def test_health_fails_after_max_failures_cycles_in_a_row_naming_the_last_error():
    assert _state(5).failing(5) == "5 sync cycles failed in a row; the last: cannot read ca/ca.key: Permission denied"


def test_health_stays_ok_when_the_cycles_failed_only_because_consul_was_unreachable():
    assert _state(50, "Consul unreachable at http://127.0.0.1:8500", consul_away=True).failing(5) == ""


# --- an unreadable file, for real ----------------------------------------------------------

def _unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run as uid 65534 when we are root; as ourselves (who cannot read mode 000 either) otherwise."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


@pytest.fixture
def unreadable_root():
    """A root owned by the unprivileged user, holding a readable file and a mode-000 ca/ca.key."""
    # Not tmp_path: pytest's base directory is private to root, and uid 65534 must reach this.
    base = Path(tempfile.mkdtemp(prefix="statesync-unreadable-"))
    root = base / "root"
    (root / "ca").mkdir(parents=True)
    (root / "icinga2.state").write_text("state")
    (root / "ca/ca.key").write_text("secret-key-material")
    os.chmod(root / "ca/ca.key", 0)
    if os.geteuid() == 0:
        for path in (base, root, root / "ca", root / "icinga2.state", root / "ca/ca.key"):
            os.chown(path, NOBODY, NOBODY)
    yield root
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.consul
def test_backup_of_an_unreadable_file_exits_1_with_one_line_naming_the_file(consul, prefix, unreadable_root):
    proc = subprocess.run(_unprivileged(statesync_cmd("backup")), env=statesync_env(consul.addr, prefix, unreadable_root),
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert plain_lines(proc.stderr)[-1] == "statesync: error: cannot read ca/ca.key: Permission denied"
    assert "unexpected" not in proc.stderr and "Traceback" not in proc.stderr + proc.stdout


def _gauge(port: int, name: str) -> float | None:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", http_get(port, "/metrics")[1], re.M)
    return float(m.group(1)) if m else None


@pytest.mark.consul
def test_a_sidecar_that_cannot_read_a_file_turns_unhealthy_naming_it_and_recovers_once_it_can(
        consul, prefix, unreadable_root, tmp_path):
    (port,) = free_ports(1)
    env = statesync_env(consul.addr, prefix, unreadable_root, STATESYNC_HTTP_PORT=str(port), STATESYNC_HEALTH_MAX_FAILURES="2")
    log = tmp_path / "sidecar.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(_unprivileged(statesync_cmd("run", "--role", "master")), env=env, cwd=REPO,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(http_get(port, "/healthz")), 120,
                                "/healthz unhealthy", log.read_text, step=0.1)
        assert "cannot read ca/ca.key: Permission denied" in body
        assert _gauge(port, "statesync_consecutive_failures") >= 2
        assert proc.poll() is None, "the sidecar keeps trying"

        os.chmod(unreadable_root / "ca/ca.key", 0o600)
        wait_for(lambda: http_get(port, "/healthz")[0] == 200, 120, "/healthz healthy again", log.read_text, step=0.1)
        assert _gauge(port, "statesync_consecutive_failures") == 0
    finally:
        assert stop_process(proc, 15) == 0
    out = log.read_text()
    assert "cannot read ca/ca.key: Permission denied" in out  # the log names the path, the metric only counts
    assert "Traceback" not in out


# --- excludes add to the defaults --------------------------------------------------------------

def _backup_paths(consul, prefix: str, root: Path, make_cfg, repo_for, *flags: str) -> set[str]:
    proc = subprocess.run(statesync_cmd("backup", *flags), env=statesync_env(consul.addr, prefix, root), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    repo = repo_for(make_cfg())
    return {e.path for e in repo.manifest(repo.head().record).entries}


@pytest.fixture
def tree_with_temporary_files(tmp_path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    for name in ("icinga2.state", "x.swp", "x.tmp", "x.bak", "notes~"):
        (root / name).write_text(name)
    return root


@pytest.mark.consul
def test_an_exclude_flag_leaves_the_default_excludes_in_force(consul, prefix, make_cfg, repo_for,
                                                                tree_with_temporary_files):
    paths = _backup_paths(consul, prefix, tree_with_temporary_files, make_cfg, repo_for, "--exclude", "*.bak")
    assert paths == {"icinga2.state"}


@pytest.mark.consul
def test_no_default_excludes_takes_temporary_files_into_the_snapshot(consul, prefix, make_cfg, repo_for,
                                                                     tree_with_temporary_files):
    paths = _backup_paths(consul, prefix, tree_with_temporary_files, make_cfg, repo_for,
                          "--no-default-excludes", "--exclude", "*.bak")
    assert paths == {"icinga2.state", "x.swp", "x.tmp", "notes~"}
