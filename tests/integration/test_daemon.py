"""The mirror daemon (`statesync run --role master`) as a real process against real Consul."""
from __future__ import annotations

import os
import statistics
import time

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo

from ..sidecar import Sidecar
from ..support import ConsulAgent, free_ports, wait_for

pytestmark = pytest.mark.consul

# Only to stop a hang: a loaded machine may take this long for what takes a second here.
PATIENCE = 120


def _repo(addr, prefix, node="node1"):
    cfg = config.load({"prefix": prefix, "node": node, "consul.addr": [addr], "root": "/nonexistent"}, env={})
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)


def _file_in_head(repo: Repo, path: str, content: bytes) -> bool:
    rec = repo.head().record
    if rec is None:
        return False
    entry = repo.manifest(rec).by_path().get(path)
    from statesync.snapshot.chunking import sha256
    return entry is not None and entry.sha256 == sha256(content)


def test_the_daemon_commits_each_written_file(consul, prefix, tmp_path):
    # How fast is bench/run.py's "daemon latency" (docs/BENCH.md: p99 <= debounce + 300 ms); here
    # only that every write reaches a head, in order, and the latencies are printed for a look.
    root = tmp_path / "root"
    root.mkdir()
    (root / "seed").write_text("seed")
    sidecar = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-node1.log")
    repo = _repo(consul.addr, prefix)
    store = repo.store
    try:
        wait_for(lambda: repo.head().record is not None, PATIENCE, step=0.02)
        latencies = []
        for i in range(40):
            head = store.get(repo.layout.head)
            content = f"write {i} {time.time()}".encode()
            start = time.monotonic()
            (root / f"file{i % 5}").write_bytes(content)
            index = head.modify_index
            while True:
                index, pair = store.wait(repo.layout.head, index, 5)
                if _file_in_head(repo, f"file{i % 5}", content):
                    break
                assert time.monotonic() - start < PATIENCE, f"write {i}: no commit within {PATIENCE} s"
            latencies.append(time.monotonic() - start)
        p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1]
        print(f"commit latency p50={statistics.median(latencies):.3f}s p99={p99:.3f}s (not a pass mark)")
    finally:
        assert sidecar.stop() == 0
    assert '"event": "stopped"' in sidecar.output()


def test_the_daemon_survives_a_consul_outage_and_catches_up(consul_bin, prefix, tmp_path):
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(tmp_path / "consul")).start()
    root = tmp_path / "root"
    root.mkdir()
    (root / "before").write_text("before the outage")
    sidecar = Sidecar.start(agent.addr, prefix, root, root.parent / "sidecar-node1.log")
    try:
        repo = _repo(agent.addr, prefix)
        wait_for(lambda: repo.head().record is not None, PATIENCE, step=0.02)
        agent.stop()
        for i in range(20):
            (root / f"during{i}").write_text(f"written while Consul was away {i}")
            time.sleep(0.1)
        (root / "before").unlink()
        # Consul comes back only after the daemon tried a commit without it, however long that takes.
        wait_for(lambda: "commit failed; will retry" in sidecar.output(), PATIENCE,
                 what="a commit tried while Consul is away", details=lambda: sidecar.output()[-2000:])
        assert sidecar.proc.poll() is None, "the daemon must keep running without Consul"
        agent.start()
        expected = {p.name for p in root.iterdir() if not p.name.startswith(".statesync-")}

        def caught_up():
            rec = repo.head().record
            return rec and {e.path for e in repo.manifest(rec).entries} == expected
        wait_for(caught_up, PATIENCE, step=0.5)
    finally:
        assert sidecar.stop() == 0
        agent.cleanup()
    out = sidecar.output()
    assert "commit failed; will retry" in out
    assert "Consul unreachable" in out


def test_sigterm_during_a_burst_stops_cleanly_without_a_half_commit(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    sidecar = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-node1.log")
    repo = _repo(consul.addr, prefix)
    try:
        wait_for(lambda: repo.head().record is not None, PATIENCE, step=0.02)
        for i in range(200):
            (root / f"f{i}").write_bytes(os.urandom(2048))
    finally:
        assert sidecar.stop() == 0
    rec = repo.head().record
    target = tmp_path / "restored"
    from statesync.restore.apply import restore
    restore(repo, rec, target)
    assert len(list(target.iterdir())) == rec.files


def test_sigterm_while_the_start_up_waits_for_consul_stops_the_sidecar_with_exit_0(prefix, tmp_path):
    # A container engine stops a sidecar that is still starting with the same SIGTERM; dying of it
    # unhandled (exit -15) reads as a crash, and it was seen in CI right after the ready marker.
    root = tmp_path / "root"
    root.mkdir()
    sidecar = Sidecar.start(f"127.0.0.1:{free_ports(1)[0]}", prefix, root, root.parent / "sidecar-node1.log")
    try:
        # the root lock is taken inside `run`, after its handlers are in place; Consul never answers
        wait_for(lambda: (root / ".statesync-lock").exists(), PATIENCE, "the sidecar to take the root lock")
        time.sleep(0.5)
        assert sidecar.proc.poll() is None, sidecar.output()
    finally:
        code = sidecar.stop()
    assert code == 0, sidecar.output()
    assert "stopped during start-up" in sidecar.output()
    assert "Traceback" not in sidecar.output()


def test_a_stop_commits_what_changed_since_the_last_commit_without_waiting_for_the_burst_or_a_paced_interval(
        consul, prefix, tmp_path):
    # Icinga 2 writes its program state as it stops, and docker-compose stops the sidecar right
    # after it: that last version must reach Consul before the sidecar exits. Here the change is
    # both in an unsettled burst (debounce 30 s) and paced (min_interval 1 h): only the stop commits it.
    root = tmp_path / "root"
    root.mkdir()
    (root / "icinga2.state").write_bytes(b"the state of the last periodic dump")
    sidecar = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-node1.log", debounce=30, max_wait=60,
                            min_interval="icinga2.state=1h")
    repo = _repo(consul.addr, prefix)
    try:
        wait_for(lambda: _file_in_head(repo, "icinga2.state", b"the state of the last periodic dump"), PATIENCE,
                 step=0.05)
        tmp = root / "icinga2.state.tmp.Xy12Ab"  # written as Icinga 2 does: a temporary file, then a rename
        tmp.write_bytes(b"the state Icinga 2 wrote while stopping")
        os.rename(tmp, root / "icinga2.state")
    finally:
        assert sidecar.stop() == 0, sidecar.output()[-3000:]
    assert _file_in_head(repo, "icinga2.state", b"the state Icinga 2 wrote while stopping"), sidecar.output()[-3000:]
