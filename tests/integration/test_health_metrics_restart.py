"""The health endpoint of a real `statesync run`: a restarted sidecar's last-commit time is its
head snapshot's, the build is described, and HEAD is answered like GET."""
from __future__ import annotations

import http.client
import random
import re
from datetime import datetime

import pytest

from statesync.sidecar.wiring import open_repo

from ..ha_support import make_state_tree
from ..sidecar import Sidecar
from ..support import free_ports, http_get, wait_for

pytestmark = pytest.mark.consul


def _metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _head(port: int, path: str) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("HEAD", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _get_headers(port: int, path: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    finally:
        conn.close()


def _sidecar(consul, prefix, tmp_path, port: int, log: str) -> Sidecar:
    return Sidecar.start([consul.addr], prefix, tmp_path / "root", tmp_path / log, ready_beside_log=True, http_port=str(port), lock_enabled="false")


def test_a_restarted_sidecar_reports_its_head_snapshots_time_as_the_last_commit(consul, prefix, tmp_path, make_cfg):
    make_state_tree(tmp_path / "root", 20, random.Random(19))
    port = free_ports(1)[0]
    first = _sidecar(consul, prefix, tmp_path, port, "first.log")
    try:
        wait_for(lambda: (_metric(http_get(port, "/metrics")[1], "statesync_commits_total") or 0) >= 1, 60,
                 "the first commit", details=first.output)
    finally:
        assert first.stop() == 0
    head = open_repo(make_cfg()).checked_head().record
    created = datetime.fromisoformat(head.created).timestamp()

    second = _sidecar(consul, prefix, tmp_path, port, "second.log")
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, 60, "the restarted sidecar's /readyz",
                 details=second.output)
        metrics = http_get(port, "/metrics")[1]
        assert _metric(metrics, "statesync_commits_total") == 0  # nothing changed: no new snapshot
        assert _metric(metrics, "statesync_last_commit_timestamp_seconds") == pytest.approx(created, abs=0.001)
    finally:
        assert second.stop() == 0


def test_the_metrics_describe_the_build_and_every_endpoint_answers_head_like_get(consul, prefix, tmp_path):
    import platform

    from statesync import __version__
    make_state_tree(tmp_path / "root", 20, random.Random(19))
    port = free_ports(1)[0]
    sidecar = _sidecar(consul, prefix, tmp_path, port, "sidecar.log")
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, 60, "the sidecar's /readyz", details=sidecar.output)
        metrics = http_get(port, "/metrics")[1]
        info = f'statesync_build_info{{python="{platform.python_version()}",version="{__version__}"}} 1.0'
        assert info in metrics.splitlines()
        for path in ("/healthz", "/readyz", "/metrics", "/nowhere"):
            status, headers, body = _head(port, path)
            get_status, get_headers = _get_headers(port, path)
            assert (status, headers["Content-Type"], body) == (get_status, get_headers["Content-Type"], b"")
            assert int(headers["Content-Length"]) > 0
    finally:
        assert sidecar.stop() == 0
