"""`statesync health` (the image's HEALTHCHECK) asks the port the configuration gives, and
`keygen --group` writes a key the containers' group can read."""
from __future__ import annotations

import stat
import subprocess

import pytest

from ..sidecar import Sidecar
from ..support import clean_env, free_ports, statesync_cmd, wait_for

pytestmark = pytest.mark.consul


def _env(**extra: str) -> dict[str, str]:
    env = clean_env()
    env.update(extra)
    return env


def _health(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(statesync_cmd("health", *args), env=_env(**env), capture_output=True, text=True,
                          timeout=30)


def test_health_asks_the_configured_port_so_a_moved_port_stays_healthy(consul, prefix, tmp_path):
    # The image's HEALTHCHECK used to ask a fixed 9465: a sidecar on 9470 was marked unhealthy.
    port = free_ports(1)[0]
    root = tmp_path / "root"
    root.mkdir()
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, http_port=str(port))
    try:
        proc = wait_for(lambda: (p := _health(STATESYNC_HTTP_PORT=str(port))).returncode == 0 and p, 30,
                        "the sidecar's /healthz", details=sidecar.output)
        assert proc.stdout.startswith(f"healthy: http://127.0.0.1:{port}/healthz")
        ready = wait_for(lambda: (p := _health("--ready", STATESYNC_HTTP_PORT=str(port))).returncode == 0 and p, 30,
                         "the sidecar's /readyz", details=sidecar.output)
        assert "/readyz" in ready.stdout
    finally:
        assert sidecar.stop() == 0


def test_health_with_nothing_listening_is_one_line_and_exit_1():
    port = free_ports(1)[0]
    proc = _health(STATESYNC_HTTP_PORT=str(port))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz")
    assert "Traceback" not in proc.stderr


def test_health_without_a_health_port_is_a_usage_error():
    proc = _health(STATESYNC_HTTP_PORT="0")
    assert proc.returncode == 2
    assert "http.port" in proc.stderr and "Traceback" not in proc.stderr


def test_keygen_with_group_writes_a_key_only_root_and_that_group_can_read(tmp_path):
    out = tmp_path / "statesync_key"
    proc = subprocess.run(statesync_cmd("keygen", "--out", str(out), "--group", "5665"), env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    st = out.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 5665
    assert "group 5665" in proc.stdout


def test_keygen_without_group_keeps_the_key_private(tmp_path):
    out = tmp_path / "statesync_key"
    subprocess.run(statesync_cmd("keygen", "--out", str(out)), env=_env(), check=True, capture_output=True, timeout=30)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("gid", ["-1", "abc", "99999999999"])
def test_keygen_refuses_a_group_that_is_no_numeric_id(tmp_path, gid):
    out = tmp_path / "k"
    proc = subprocess.run(statesync_cmd("keygen", "--out", str(out), "--group", gid), env=_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and not out.exists()
