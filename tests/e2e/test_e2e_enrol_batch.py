"""End to end (issue 26): registrations that arrive together are staged together, with one reload.

A real master (Icinga 2 and its sidecar) and a real satellite sat1, enrolled through Consul and
connected (tests/e2e/test_e2e_icinga.Cluster). Then N more satellites arrive: their requests are
pending on the master as Icinga 2 stores them, and their registrations are written one after the
other over a few seconds, as a fleet's sidecars write them (tests/enrol_burst.py). Every stage
makes Icinga 2 reload and drop every cluster connection for seconds, so what arrived together
must cost one stage: counted from the stages the sidecar activated and the reloads Icinga 2
logged, never from a clock.

Slow (about a minute per Icinga 2 version): a master and sat1 are enrolled first.
"""
from __future__ import annotations

import pytest

from .. import enrol_burst as eb
from .. import icinga
from ..icinga import MAX_WAIT
from ..support import wait_for
from .test_e2e_icinga import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.consul, pytest.mark.slow]

N = 12
GAP = 0.25  # seconds between two registrations: a burst, not one instant


def test_registrations_written_together_are_accepted_in_one_stage_with_one_reload(consul, tmp_path, icinga_root):
    icinga.require_nodes(icinga_root)
    c = Cluster(consul, tmp_path, icinga_root)
    try:
        c.enrol_and_connect()
        sats = eb.satellites(N)
        cns, fps = {s["cn"] for s in sats}, {s["fp"] for s in sats}
        eb.write_requests(c, sats)
        # Every request seen, and waiting for its registration: the burst starts from a settled master.
        wait_for(lambda: {e.get("cn") for e in c.master_sidecar.events("certificate request waits for a registration")}
                 >= cns, MAX_WAIT, what="the master seeing every pending request", details=c.details, step=0.2)
        stages0, reloads0 = len(eb.stages(c)), eb.reloads(c)

        eb.register(c, sats, writers=1, gap=GAP)
        wait_for(lambda: cns <= (eb.in_package(c) or set()), MAX_WAIT, what="Icinga 2 running every new Endpoint",
                 details=c.details, step=0.2)
        wait_for(lambda: eb.signed(c, fps) == N, MAX_WAIT, what="every request signed", details=c.details, step=0.2)
        c.wait_connected()

        staged = eb.stages(c)[stages0:]
        assert [sorted(set(s) - {c.sat.cn}) for s in staged] == [sorted(cns)], staged
        assert eb.reloads(c) - reloads0 == 1
    finally:
        problems = c.cleanup()
        assert not problems, f"cleanup: {problems}"
