"""A restarted Consul server replays its raft log while it already answers: start-up decisions wait.

Slow (about 60 s for the module): one real server, 100 MB of raft log written once, restarted
three times; each restart waits for Consul's own election (about 7 s).

A single Consul server (not dev mode: ``-server -bootstrap-expect=1`` with a data dir) holds a
node's snapshot A, then ``FILLER_MB`` of other keys, then the node's head B. Restarted, it
elects itself and then applies its log again; a read that arrived before the election (held by
Consul until there is a leader) is served at the election from a state that does not hold B
yet. Each trial restarts it and starts, while it elects itself, the real CLI on empty roots:
``restore --if-empty`` and ``run --role master`` for the node, and ``restore --if-empty`` for a
mistyped node beside another node's snapshot. Each must restore exactly B or wait (fail with
nothing written); none may restore A, write the ready marker on an empty root, or commit a
stale tree.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo

from ..support import (
    ConsulAgent,
    clean_env,
    make_tree,
    run_statesync,
    statesync_cmd,
    stop_process,
    wait_for,
    write_filler,
)

pytestmark = [pytest.mark.consul, pytest.mark.slow]

# Calibrated on the old code (default-consistency reads), three trials a run: 3 MB and 10 MB of
# filler went wrong in 1 of 3 trials, 30 MB in 2 of 3, 100 MB in 3 of 3 (twice). With 100 MB the
# data dir holds 103 MB; the default read goes from A to B about 0.2 s after the server answers
# again, and the restarted server elects itself about 7 s after it starts (raft_multiplier 5).
FILLER_MB = 100
TRIALS = 3


def _env(agent: ConsulAgent, prefix: str, node: str, ready: Path | None = None) -> dict:
    env = clean_env()
    env.update(STATESYNC_CONSUL_ADDR=agent.addr, STATESYNC_PREFIX=prefix, STATESYNC_NODE=node,
               STATESYNC_ALLOW_PLAINTEXT_SECRETS="true", STATESYNC_LOG_FORMAT="json",
               STATESYNC_READY_FILE=str(ready or Path("/nonexistent/ready")))
    return env


def _backup(agent: ConsulAgent, prefix: str, node: str, root: Path) -> str:
    out = run_statesync(["backup", "--root", str(root)], _env(agent, prefix, node), check=True).stdout
    return out.split()[1].rstrip(":")


def _repo(agent: ConsulAgent, prefix: str, node: str) -> Repo:
    cfg = config.load({"prefix": prefix, "node": node, "consul.addr": [agent.addr], "root": "/nonexistent"}, env={})
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)


@pytest.fixture(scope="module")
def replaying(consul_bin, tmp_path_factory):
    """The server and, per trial, its prefix with snapshot ids ``(A, B)`` of node n1: A before the
    filler, B (the head) after it; and node m1's only snapshot, under another prefix, after it."""
    base = tmp_path_factory.mktemp("replay")
    agent = ConsulAgent(consul_bin, dev=False, workdir=str(base / "consul")).start()
    try:
        src = base / "src"
        make_tree(src)
        trials = []
        for i in range(TRIALS):
            (src / "version").write_text("A")
            trials.append({"prefix": f"replay/t{i}", "typo_prefix": f"replay/typo{i}",
                           "A": _backup(agent, f"replay/t{i}", "n1", src)})
        write_filler(agent.addr, FILLER_MB)
        (src / "version").write_text("B")
        for t in trials:
            t["B"] = _backup(agent, t["prefix"], "n1", src)
            _backup(agent, t["typo_prefix"], "m1", src)
        yield agent, trials, base
    finally:
        agent.cleanup()


def _marker(ready: Path) -> dict | None:
    try:
        return json.loads(ready.read_text())
    except FileNotFoundError:
        return None


def _version(root: Path) -> str:
    try:
        return (root / "version").read_text()
    except FileNotFoundError:
        return ""


def _has_state(root: Path) -> bool:
    return (root / "ca").exists() or (root / "certs").exists()


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_restarted_consul_never_makes_a_start_up_restore_stale_or_empty(replaying, trial):
    agent, trials, base = replaying
    t = trials[trial]
    work = base / f"trial{trial}"
    work.mkdir()
    racers = {
        "restore": (("restore", "--if-empty", "--root", str(work / "restore")), t["prefix"], "n1"),
        "run": (("run", "--role", "master", "--root", str(work / "run")), t["prefix"], "n1"),
        # No snapshot of this node, but m1 has one there: refuse (a mistyped --node), or wait.
        "typo": (("restore", "--if-empty", "--root", str(work / "typo")), t["typo_prefix"], "typo"),
    }
    agent.restart()
    # Started while the server elects itself: their first reads wait in Consul for the leader.
    procs = {}
    for name, (args, prefix, node) in racers.items():
        log = open(work / f"{name}.log", "wb")
        procs[name] = subprocess.Popen(statesync_cmd(*args), env=_env(agent, prefix, node, work / f"{name}.ready"),
                                       stdout=log, stderr=subprocess.STDOUT, cwd=work)
        log.close()
    try:
        def logs() -> str:
            return "\n".join(f"--- {n}\n{(work / f'{n}.log').read_text()[-3000:]}" for n in racers)

        for name in ("restore", "typo"):
            procs[name].wait(180)
        run_ready = work / "run.ready"
        wait_for(lambda: run_ready.exists() or procs["run"].poll() is not None, 180,
                 what="the sidecar ready or stopped", details=logs)

        restored = _marker(work / "restore.ready")
        if procs["restore"].returncode == 0:
            assert restored is not None and (restored["action"], restored["snapshot"]) == ("restored", t["B"]), logs()
            assert _version(work / "restore") == "B", logs()
        else:
            assert restored is None and not _has_state(work / "restore"), logs()

        assert not (procs["typo"].returncode == 0 or (work / "typo.ready").exists()), logs()
        assert not _has_state(work / "typo"), logs()

        sidecar = _marker(run_ready)
        repo = _repo(agent, t["prefix"], "n1")
        if sidecar is None:
            assert not _has_state(work / "run"), logs()
        else:
            assert sidecar["action"] == "restored" and sidecar["snapshot"] == t["B"], logs()
            assert _version(work / "run") == "B", logs()
            # Its next commit (of a file written now) must sit on B and hold B's tree.
            (work / "run" / "probe.txt").write_text("after the restart")
            head = wait_for(lambda: (h := repo.head().record) is not None and h.id != t["B"] and h,
                            120, what="the sidecar's commit of probe.txt", details=logs, step=0.2)
            assert head.parent == t["B"], logs()
            paths = repo.manifest(head).by_path()
            assert "probe.txt" in paths and paths["version"].sha256 == repo.manifest(repo.record(t["B"])).by_path()[
                "version"].sha256, logs()
        history = {r.id for r in repo.records()}
        assert {t["A"], t["B"]} <= history, logs()
    finally:
        for proc in procs.values():
            stop_process(proc, 30)
    print(f"trial {trial}: restore exit {procs['restore'].returncode}, typo exit {procs['typo'].returncode}, "
          f"sidecar {'ready' if sidecar else 'waited'}")
