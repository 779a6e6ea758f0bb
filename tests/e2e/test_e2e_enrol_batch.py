"""End to end (issue 26): registrations that arrive together are staged together, with one reload.

A real master (Icinga 2 and its sidecar) and a real satellite sat1, enrolled through Consul and
connected (tests/e2e/test_e2e_icinga.Cluster). Then N more satellites arrive: their requests are
pending on the master as Icinga 2 stores them, and their registrations are written one after the
other over a few seconds, as a fleet's sidecars write them (tests/enrol_burst.py). Every stage
makes Icinga 2 reload and drop every cluster connection for seconds, so what arrived together
must cost one stage: counted from the stages the sidecar activated and the reloads Icinga 2
logged, never from a clock.

A hostile registration in the burst (one Icinga's config check fails with, one in a zone it may
not have) is left out or refused, and still costs the valid ones no extra stage nor reload: the
newcomer to blame is found by validate-only stages, which do not reload.

Slow (about two minutes per Icinga 2 version): a master and sat1 are enrolled first, and each
burst waits for the passes and the reload of the real master. Every wait is bounded by MAX_WAIT.
"""
from __future__ import annotations

import subprocess

import pytest

from .. import enrol_burst as eb
from .. import icinga
from ..icinga import MAX_WAIT
from ..support import wait_for
from .test_e2e_icinga import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.consul, pytest.mark.slow]

N = 12
GAP = 0.25  # seconds between two registrations: a burst, not one instant


@pytest.fixture(scope="module")
def cluster(consul, tmp_path_factory, icinga_root):
    """Once per Icinga 2 version of the matrix (tests/e2e/conftest.py)."""
    icinga.require_nodes(icinga_root)
    c = Cluster(consul, tmp_path_factory.mktemp("e2e-enrol-batch"), icinga_root)
    try:
        c.enrol_and_connect()
        yield c
    finally:
        problems = c.cleanup()
        assert not problems, f"cleanup: {problems}"


def _pending(c, sats: list[dict]) -> None:
    """Their requests pending on the master, and every one seen by a pass: the burst that follows
    starts from a settled master."""
    eb.write_requests(c, sats)
    cns = {s["cn"] for s in sats}
    wait_for(lambda: {e.get("cn") for e in c.master_sidecar.events("certificate request waits for a registration")}
             >= cns, MAX_WAIT, what="the master seeing every pending request", details=c.details, step=0.2)


def _accepted_and_signed(c, sats: list[dict]) -> None:
    cns, fps = {s["cn"] for s in sats}, {s["fp"] for s in sats}
    wait_for(lambda: cns <= (eb.in_package(c) or set()), MAX_WAIT, what="Icinga 2 running every new Endpoint",
             details=c.details, step=0.2)
    wait_for(lambda: eb.signed(c, fps) == len(fps), MAX_WAIT, what="every request signed", details=c.details,
             step=0.2)
    c.wait_connected()


def test_registrations_written_together_are_accepted_in_one_stage_with_one_reload(cluster):
    c = cluster
    sats = eb.satellites(N, "asat")
    _pending(c, sats)
    stages0, reloads0 = len(eb.stages(c)), eb.reloads(c)

    eb.register(c, sats, writers=1, gap=GAP)
    _accepted_and_signed(c, sats)

    staged = eb.stages(c)[stages0:]
    assert [sorted(set(s) - {c.sat.cn}) for s in staged] == [sorted(s["cn"] for s in sats)], staged
    assert eb.reloads(c) - reloads0 == 1


def test_a_hostile_registration_in_the_burst_costs_the_others_no_extra_stage_nor_reload(cluster):
    c = cluster
    before = set(eb.in_package(c) or ())
    sats = eb.satellites(N, "bsat")
    poisoned, refused, good = sats[3], sats[7], [s for i, s in enumerate(sats) if i not in (3, 7)]
    # Config Icinga compiles only once a zone of the poisoned one's name exists: its check fails with it.
    left = c.master.lib / f"api/zones/{poisoned['cn']}/_etc"
    left.mkdir(parents=True)
    (left / "left-over.conf").write_text('object Host "left-over" { }\n')  # no check_command: invalid
    subprocess.run(["chown", "-R", "nagios:nagios", str(c.master.lib / "api/zones")], check=True)
    _pending(c, sats)
    stages0, reloads0 = len(eb.stages(c)), eb.reloads(c)

    # The refused one names a zone zones.conf defines (tests/icinga.provision_master): never staged.
    eb.register(c, sats, writers=1, gap=GAP, zones={refused["cn"]: "legacy-dc"})
    _accepted_and_signed(c, good)

    staged = eb.stages(c)[stages0:]
    assert [sorted(set(s) - before) for s in staged] == [sorted(s["cn"] for s in good)], staged
    assert eb.reloads(c) - reloads0 == 1
    assert eb.signed(c, {poisoned["fp"], refused["fp"]}) == 0
    [event] = [e for e in c.master_sidecar.events("registration left out") if poisoned["cn"] in e.get("satellite", "")]
    assert "check_command" in event["reason"], event
    for s in sats:
        c.store().delete(f"{c.prefix}/satellites/{s['cn']}")
