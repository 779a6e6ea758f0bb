"""The HTTP endpoint (/healthz, /readyz, /metrics) of a real sidecar, and the README's demo."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from ..support import ConsulAgent, clean_env, free_ports, http_get, statesync_cmd, stop_process, wait_for

pytestmark = pytest.mark.consul




def test_the_sidecar_serves_health_readiness_and_metrics_and_readiness_follows_consul(consul_bin, prefix, tmp_path):
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(tmp_path / "consul")).start()
    root = tmp_path / "root"
    root.mkdir()
    (root / "icinga2.state").write_text("state")
    (port,) = free_ports(1)
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE="n1", STATESYNC_HTTP_PORT=str(port), STATESYNC_LOG_FORMAT="json",
               STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    log = open(tmp_path / "sidecar.log", "wb")
    proc = subprocess.Popen(statesync_cmd("run", "--role", "master"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200 if _port_open(port) else False, 120, step=0.1)
        assert http_get(port, "/healthz")[0] == 200
        status, text = http_get(port, "/metrics")
        assert status == 200
        wait_for(lambda: _metric(http_get(port, "/metrics")[1], "statesync_commits_total") >= 1, 120, step=0.1)
        text = http_get(port, "/metrics")[1]
        assert _metric(text, "statesync_last_commit_timestamp_seconds") > time.time() - 120
        assert _metric(text, "statesync_chunks_uploaded_total") >= 1
        assert "statesync_commit_duration_seconds_bucket" in text
        assert "statesync_consul_errors_total" in text
        assert _metric(text, "statesync_ready") == 1
        assert http_get(port, "/nope")[0] == 404

        agent.stop()
        status, why = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(http_get(port, "/readyz")), 120, step=0.1)
        assert "Consul" in why
        assert http_get(port, "/healthz")[0] == 200, "alive while Consul is away"
        agent.start()
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, 60, step=0.1)
    finally:
        assert stop_process(proc, 30) == 0
        log.close()
        agent.cleanup()


def _port_open(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def test_the_demo_shows_the_same_ca_fingerprint_before_and_after_the_wipe(consul_bin):
    env = dict(os.environ, STATESYNC_CONSUL_BIN=consul_bin)
    env = {k: v for k, v in env.items() if not k.startswith("CONSUL_")}
    proc = subprocess.run(statesync_cmd("demo"), env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fps = re.findall(r"CA public-key fingerprint \(sha256\): ([0-9a-f]{64})", proc.stdout)
    assert len(fps) == 2 and fps[0] == fps[1]
    assert "the CA survived the rebuild" in proc.stdout
