"""A three-server Consul cluster on loopback loses its leader while files change."""
from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from statesync.consul.settings import ConsulSettings, Endpoint
from statesync.consul.store import Store

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
from ..support import (
    ConsulCluster,
    clean_env,
    free_ports,
    run_statesync,
    statesync_cmd,
    tree_state,
    wait_for,
    write_filler,
)

pytestmark = [pytest.mark.consul, pytest.mark.slow]  # each test starts a three-server cluster

SETTINGS = {"lock_ttl": 2, "lock_delay": 1, "keep": 1000, "debounce": 0.1, "max_wait": 0.5}


@pytest.fixture
def cluster(consul_bin, tmp_path):
    c = ConsulCluster(consul_bin, str(tmp_path / "cluster")).start()
    yield c
    c.cleanup()


def test_the_sidecar_goes_on_when_the_consul_leader_is_killed_during_churn(cluster, prefix, tmp_path):
    leader = cluster.wait_leader(120)
    # The leader first: the sidecar talks to it until it dies, then must move on to the others.
    addrs = [leader.addr] + [s.addr for s in cluster.servers if s is not leader]
    root = tmp_path / "root"
    make_state_tree(root, 200, random.Random(2))
    cfg = load_cfg(addrs, prefix, root)
    repo = node_repo(addrs, prefix)
    sidecar = Sidecar.start(addrs, prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, **SETTINGS)
    churn = Churn(root, seed=22, rate=30)
    try:
        wait_for(lambda: repo.head().record is not None, 120, what="first snapshot")
        churn.start()
        wait_for(lambda: sidecar.count('"committed"') >= 3, 120, what="commits during churn")

        cluster.kill(leader)
        killed = time.monotonic()
        new_leader = cluster.wait_leader(120, other_than=leader)
        elected = time.monotonic() - killed
        (root / "api/after-kill.conf").write_text("written after the leader died")
        wait_for(lambda: _has(repo, "api/after-kill.conf"), 120, step=0.1, what="a commit after the election")
        print(f"new leader {new_leader.node_name} after {elected:.2f}s; "
              f"first commit after the kill at {time.monotonic() - killed:.2f}s")
        after = sidecar.count('"committed"')
        wait_for(lambda: sidecar.count('"committed"') >= after + 3, 120, what="commits going on after the election")

        churn.stop()
        record = wait_for(lambda: head_equals_tree(repo, cfg), 120, step=0.2, what="head equal to the final tree")
        assert_restores_to_tree(repo, record, root, tmp_path)
        check_history(repo, tmp_path, restore_all=False)
        assert sidecar.alive()
    finally:
        churn.stop()
        sidecar.stop()


def test_start_up_restores_after_a_leader_change_restore_exactly_the_head(cluster, prefix, tmp_path):
    """The leader is stopped right after the node's newest commit; an init container's
    ``restore --if-empty`` and a sidecar start on empty roots during the election. Their reads are
    consistent, so a new leader answers them only once it has caught up: both restore the head."""
    leader = cluster.wait_leader(120)
    addrs = [leader.addr] + [s.addr for s in cluster.servers if s is not leader]
    src, head = _two_snapshots(addrs, prefix, tmp_path)
    cluster.kill(leader)
    _race_start_up(addrs, prefix, tmp_path, src, head, addrs[1:])
    print(f"new leader {cluster.wait_leader(120, other_than=leader).node_name} after {leader.node_name} was killed")


def test_start_up_restores_after_the_whole_cluster_restarted_restore_exactly_the_head(cluster, prefix, tmp_path):
    """Slow (about 40 s): 100 MB of other keys between the node's two snapshots, replicated to three
    servers, then all three restarted (a power cut). The elected leader answers reads that waited
    for it while it still applies its log; the old default-mode reads restored the older snapshot."""
    addrs = cluster.addrs
    src, head = _two_snapshots(addrs, prefix, tmp_path, filler_mb=100)
    for server in cluster.servers:
        server.stop()
    for server in cluster.servers:
        server.launch()
    wait_for(lambda: any(s.answers() for s in cluster.servers), 60, what="a restarted server answering")
    _race_start_up(addrs, prefix, tmp_path, src, head, addrs)
    print(f"leader after the restart: {cluster.wait_leader(60).node_name}")


def _two_snapshots(addrs: list[str], prefix: str, tmp_path, filler_mb: int = 0):
    """Commit two snapshots of a tree, ``filler_mb`` of other keys between them; return the tree
    (as the second one holds it) and the second one's id, the head."""
    src = tmp_path / "src"
    make_state_tree(src, 40, random.Random(5))
    first = _backup(addrs, prefix, src)
    if filler_mb:
        write_filler(addrs[0], filler_mb)
    (src / "api/d00/f00000.conf").write_text("the head's version")
    head = _backup(addrs, prefix, src)
    assert first != head
    return src, head


def _race_start_up(addrs: list[str], prefix: str, tmp_path, src, head: str, live: list[str]) -> None:
    """Start ``restore --if-empty`` and a master sidecar on empty roots now; assert both restore
    exactly ``head`` (the tree ``src``) and the sidecar's next commit sits on it."""
    init = subprocess.Popen(statesync_cmd("restore", "--if-empty"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(addrs, prefix, tmp_path / "init", tmp_path / "init.ready"),
                            cwd=tmp_path)
    sidecar = Sidecar.start(addrs, prefix, tmp_path / "run", tmp_path / "sidecar.log", ready_beside_log=True, **SETTINGS)
    try:
        out, err = init.communicate(timeout=180)
        wait_for(lambda: (tmp_path / "sidecar.ready").exists() or not sidecar.alive(), 180,
                 what="the sidecar ready", details=sidecar.output)
        print(f"restore --if-empty: {out.strip()} {err.strip()[-300:]}")
        assert init.returncode == 0, err
        assert json.loads((tmp_path / "init.ready").read_text())["snapshot"] == head, out
        assert tree_state(tmp_path / "init") == tree_state(src)
        assert json.loads((tmp_path / "sidecar.ready").read_text())["snapshot"] == head, sidecar.output()
        assert tree_state(tmp_path / "run") == tree_state(src)
        # Its next commit sits on the head it restored.
        (tmp_path / "run/api/after.conf").write_text("after the election")
        repo = node_repo(live, prefix)
        record = wait_for(lambda: _has(repo, "api/after.conf") and repo.head().record, 60, step=0.2,
                          what="the sidecar's commit after the election", details=sidecar.output)
        assert record.parent == head
    finally:
        if init.poll() is None:
            init.kill()
            init.wait(10)
        sidecar.stop()


def _env(addrs: list[str], prefix: str, root, ready) -> dict:
    env = clean_env()
    env.update(STATESYNC_CONSUL_ADDR=",".join(addrs), STATESYNC_PREFIX=prefix, STATESYNC_NODE="node1",
               STATESYNC_ROOT=str(root), STATESYNC_READY_FILE=str(ready), STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    return env


def _backup(addrs: list[str], prefix: str, root) -> str:
    env = _env(addrs, prefix, root, root.parent / "backup.ready")
    return run_statesync(["backup"], env, check=True).stdout.split()[1].rstrip(":")


def test_the_store_tries_the_listed_consul_addresses_in_turn(cluster):
    dead = Endpoint("http", "127.0.0.1", free_ports(1)[0])
    live = [Endpoint("http", "127.0.0.1", s.http) for s in cluster.servers]
    store = Store(ConsulSettings(endpoints=(dead, *live), timeout=2))
    store.put("rotation/a", b"1")
    assert store.get("rotation/a").value == b"1"
    leader = cluster.wait_leader(120)
    cluster.kill(leader)
    # During the election every server answers 5xx; once a leader is back, the next one answers.
    wait_for(lambda: _quietly(lambda: store.put("rotation/b", b"2")), 30, step=0.2, what="a write after the kill")
    assert store.get("rotation/b").value == b"2"


def _quietly(fn) -> bool:
    from statesync.errors import ConsulUnavailable
    try:
        fn()
        return True
    except ConsulUnavailable:
        return False


def _has(repo, path: str) -> bool:
    record = repo.head().record
    return record is not None and path in repo.manifest(record).by_path()
