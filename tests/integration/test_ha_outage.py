"""Consul away for 30 seconds (and at least 100 file changes) while files change: the sidecar
keeps running and catches up."""
from __future__ import annotations

import random
import time

import pytest

from ..ha_support import (
    Churn,
    assert_restores_to_tree,
    check_history,
    head_equals_tree,
    load_cfg,
    make_state_tree,
    node_repo,
)
from ..sidecar import Sidecar
from ..support import ConsulAgent, wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]  # a 30-second outage, waited out for real

OUTAGE_S = 30.0
SETTINGS = {"lock_ttl": 2, "lock_delay": 1, "keep": 1000, "debounce": 0.1, "max_wait": 0.5}
# The outage lasts until this many changes were made, however slowly a loaded machine makes them.
CHANGES = 100
# Only to stop a hang: a loaded machine may take this long for what takes seconds here.
PATIENCE = 120


def test_the_sidecar_catches_up_after_consul_is_away_for_30_seconds(consul_bin, prefix, tmp_path):
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(tmp_path / "consul")).start()
    root = tmp_path / "root"
    make_state_tree(root, 150, random.Random(3))
    cfg = load_cfg([agent.addr], prefix, root)
    repo = node_repo([agent.addr], prefix)
    sidecar = Sidecar.start([agent.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, **SETTINGS)
    churn = Churn(root, seed=33, rate=15)
    try:
        wait_for(lambda: repo.head().record is not None, PATIENCE, what="first snapshot")
        churn.start()
        wait_for(lambda: sidecar.count('"committed"') >= 2, PATIENCE, what="commits before the outage")
        before_outage = repo.head().record

        agent.stop()
        stopped = time.monotonic()
        ops_before = churn.ops
        # Consul comes back after 30 s, and only once the changes met the outage (a failed commit).
        while (time.monotonic() - stopped < OUTAGE_S or churn.ops - ops_before < CHANGES
               or "commit failed; will retry" not in sidecar.output()):
            assert sidecar.alive(), "the sidecar must keep running while Consul is away"
            assert time.monotonic() - stopped < OUTAGE_S + PATIENCE, (
                f"{churn.ops - ops_before} changes and no failed commit in {OUTAGE_S + PATIENCE:.0f}s")
            time.sleep(0.5)
        changes_during = churn.ops - ops_before
        (root / "api/during-outage.conf").write_text("written while Consul was away")
        agent.start()
        back = time.monotonic()

        wait_for(lambda: _has(repo, "api/during-outage.conf"), PATIENCE, step=0.1, what="catching up")
        print(f"{changes_during} changes during a {OUTAGE_S:.0f}s outage; "
              f"caught up {time.monotonic() - back:.2f}s after Consul was back (not a pass mark)")
        churn.stop()
        record = wait_for(lambda: head_equals_tree(repo, cfg), PATIENCE, step=0.2, what="head equal to the final tree")
        assert record.id != before_outage.id
        assert_restores_to_tree(repo, record, root, tmp_path)
        check_history(repo, tmp_path, restore_all=False)
        assert changes_during >= CHANGES
    finally:
        churn.stop()
        sidecar.stop()
        agent.cleanup()
    out = sidecar.output()
    assert "commit failed; will retry" in out
    assert "caught up with Consul" in out


def _has(repo, path: str) -> bool:
    record = repo.head().record
    return record is not None and path in repo.manifest(record).by_path()
