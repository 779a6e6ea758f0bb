"""A fleet of satellite guards behind one address, against a real Consul that limits the
connections per client address (``limits.http_max_conns_per_client``): each guard holds one
connection, so a fleet within the limit sees a CA change, and a guard over it says so."""
from __future__ import annotations

import urllib.request

import pytest
import structlog

from statesync import config
from statesync.consul.store import Store
from statesync.guard.ca_watch import Guard
from statesync.guard.logic import Verdict
from statesync.pki import cadoc
from statesync.sidecar.roles import RoleServices

from ..certs import enrol, make_ca
from ..guardkit import publish, satellite_env
from ..sidecar import Sidecar
from ..support import ConsulAgent, free_ports, http_get, wait_for

pytestmark = pytest.mark.consul

PATIENCE = 60.0  # only stops a hang: the guards answer within seconds


@pytest.fixture
def limited_consul(consul_bin, tmp_path):
    """Start a dev agent allowing ``limit`` connections per client address."""
    agents = []

    def start(limit: int) -> ConsulAgent:
        agent = ConsulAgent(consul_bin, dev=True, workdir=str(tmp_path / f"consul-{len(agents)}"),
                            extra=["-hcl", f"limits {{ http_max_conns_per_client = {limit} }}"])
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.cleanup()


def _fleet(agent: ConsulAgent, prefix: str, tmp_path, size: int, ca) -> list[Guard]:
    """``size`` guards of nodes enrolled under ``ca``, in this process, all from 127.0.0.1."""
    guards = []
    for i in range(size):
        cfg = config.load({"root": str(tmp_path / f"sat{i}"), "prefix": prefix, "node": f"sat{i}",
                           "role": "satellite", "consul.addr": [agent.addr], "log.format": "json",
                           "guard.confirmations": 1, "guard.confirm_interval": 0.1,
                           "guard.purge_window": 0}, env={})
        enrol(cfg.state_dir, ca, f"sat{i}")
        guards.append(Guard(cfg, Store(cfg.consul), None))
    return guards


def _watching(guard: Guard) -> bool:
    return guard.state.last is not None and guard.state.last.verdict is Verdict.MATCH


def _loud(guard: Guard) -> str:
    return RoleServices(guard=guard).problem()  # what /healthz says


def test_a_fleet_whose_guards_fit_the_per_address_limit_at_one_connection_each_all_see_a_ca_change(
        limited_consul, prefix, tmp_path):
    # 10 guards and the publisher need 11 connections with one per guard, 21 or more with two.
    agent = limited_consul(16)
    publisher = Store(config.load({"consul.addr": [agent.addr], "prefix": prefix}, env={}).consul)
    old = make_ca()
    guards = _fleet(agent, prefix, tmp_path, 10, old)
    publish(publisher, guards[0].key, old)
    try:
        for g in guards:
            g.start()
        wait_for(lambda: all(_watching(g) for g in guards), PATIENCE, what="every guard watching",
                 details=lambda: [(g.cfg.node, g.state.last, _loud(g)) for g in guards], step=0.05)
        publish(publisher, guards[0].key, make_ca())
        wait_for(lambda: all(g.state.purges or _loud(g) for g in guards), PATIENCE,
                 what="every guard acting on the CA change, or saying why not",
                 details=lambda: [(g.cfg.node, g.state.last and g.state.last.reason, _loud(g)) for g in guards],
                 step=0.05)
        assert [g.cfg.node for g in guards if not g.state.purges] == []
        assert [_loud(g) for g in guards if _loud(g)] == []
    finally:
        for g in guards:
            g.stop()


def test_a_guard_over_the_per_address_limit_logs_one_error_naming_it_and_health_reports_it(
        limited_consul, prefix, tmp_path):
    # The publisher's connection and 3 guards fill the limit of 4; the other 3 guards are refused.
    agent = limited_consul(4)
    publisher = Store(config.load({"consul.addr": [agent.addr], "prefix": prefix}, env={}).consul)
    ca = make_ca()
    guards = _fleet(agent, prefix, tmp_path, 6, ca)
    publish(publisher, guards[0].key, ca)
    try:
        with structlog.testing.capture_logs() as logs:
            for g in guards:
                g.start()
            wait_for(lambda: all(_watching(g) or _loud(g) for g in guards), PATIENCE,
                     what="every guard watching or saying why not", step=0.05)
            health = [_loud(g) for g in guards if _loud(g)]
            assert health, "no guard was refused: the limit is not in force"
            # The refused guards go on retrying; a second error line each would be noise, not news.
            wait_for(lambda: sum("retrying" in e["event"] for e in logs) >= 3 * len(health), PATIENCE,
                     what="the refused guards retrying", step=0.05)
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == len(health)
        assert all(e["event"].startswith("CA guard cannot watch the published CA") for e in errors)
        assert all("http_max_conns_per_client" in e["error"] for e in errors)
        assert all("http_max_conns_per_client" in h for h in health)
    finally:
        for g in guards:
            g.stop()


def test_a_satellite_sidecar_whose_guard_consul_refuses_is_unhealthy_naming_the_limit(limited_consul, prefix, tmp_path):
    """The real ``statesync run --role satellite``, behind an address Consul allows one connection:
    the start-up and the mirror take it, so the guard's own is refused; /healthz says so."""
    agent = limited_consul(1)
    cfg = config.load({"consul.addr": [agent.addr], "prefix": prefix}, env={})
    ca = make_ca()
    root = tmp_path / "root"
    enrol(root, ca)
    # Published on a connection closed at once: the one connection allowed is the sidecar's.
    doc = cadoc.encode(cadoc.from_pem(ca.pem, "2026-01-01T00:00:00Z", "master1", "test"))
    put = urllib.request.Request(f"http://{agent.addr}/v1/kv/{cfg.layout.ca}", data=doc, method="PUT")
    with urllib.request.urlopen(put, timeout=10) as answer:
        assert answer.status == 200
    port = free_ports(1)[0]
    sat = Sidecar.start(agent.addr, prefix, root, tmp_path / "sidecar-sat1.log", "sat1", "satellite",
                        http_port=str(port), **satellite_env(tmp_path / "fired"))
    try:
        wait_for(lambda: http_get(port, "/healthz")[0] == 503, PATIENCE, what="/healthz 503",
                 details=sat.tail, step=0.1)
        status, body = http_get(port, "/healthz")
        assert "CA guard cannot watch the published CA" in body and "http_max_conns_per_client" in body
        errors = [e for e in sat.events() if e.get("level") == "error"]
        assert [e["event"] for e in errors] == ["CA guard cannot watch the published CA: a CA change goes "
                                                "unnoticed until it can"]
    finally:
        assert sat.stop() == 0
