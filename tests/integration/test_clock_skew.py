"""A writer's clock decides nothing: retention and head recovery follow commit order.

The real CLI runs under libfaketime (Debian's ``faketime``, installed by scripts/setup.sh),
which shifts the clock of the process it starts, against the session's real Consul agent.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone

import pytest
import structlog

from statesync.sidecar.wiring import open_repo
from statesync.snapshot.keep_rules import id_time
from statesync.tree.scan import Scanner

from ..support import statesync_cmd, tree_state
from .test_restore_safety import Env, icinga_tree

pytestmark = pytest.mark.consul


def _backup(env: Env, n: int, clock: str = "", **extra) -> tuple[str, subprocess.CompletedProcess]:
    """``statesync backup`` of a changed tree, under ``faketime -f clock`` when given; the new head's id."""
    (env.root / "icinga2.state").write_bytes(os.urandom(3000) + str(n).encode())
    cmd = statesync_cmd("backup")
    if clock:
        faketime = shutil.which("faketime")
        assert faketime, "faketime is missing: scripts/setup.sh installs Debian's faketime"
        cmd = [faketime, "-f", clock, *cmd]
    proc = subprocess.run(cmd, env=env.env(**extra), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return env.repo.head().record.id, proc


def _ids(env: Env) -> set[str]:
    return {r.id for r in env.repo.records()}


def _clock_warnings(stderr: str) -> list[dict]:
    events = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and "clock runs behind" in str(event.get("event")):
            events.append(event)
    return events


def test_ten_commits_from_a_clock_four_years_ahead_give_up_their_keep_slots_to_the_commits_after_them(
        consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    keep = {"STATESYNC_KEEP": "10"}
    _backup(env, 0, **keep)
    skewed = [_backup(env, 10 + n, "+4y", **keep)[0] for n in range(10)]
    # libfaketime reached the interpreter's clock: the ids carry the skewed time
    assert all(id_time(s).year >= datetime.now(timezone.utc).year + 3 for s in skewed)
    real: list[str] = []
    for n in range(3):
        real.append(_backup(env, 100 + n, **keep)[0])
        # every real commit so far is kept: the skewed ones are older in commit order
        assert set(real) <= _ids(env), f"after real commit {n + 1}"
    assert _ids(env) == set(real) | set(skewed[3:])


def test_one_commit_400_days_ahead_leaves_keep_within_1d_keeping_the_last_minutes(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    rules = {"STATESYNC_KEEP": "1", "STATESYNC_KEEP_WITHIN": "1d"}
    two_days_ago = _backup(env, 0, "-2d", **rules)[0]
    recent = [_backup(env, 1, **rules)[0]]
    ahead = _backup(env, 2, "+400d", **rules)[0]
    recent += [_backup(env, n, **rules)[0] for n in (3, 4)]
    assert _ids(env) == {*recent, ahead}
    assert two_days_ago not in _ids(env)


def test_with_the_head_key_lost_restore_and_the_writer_take_the_last_commit_not_the_skewed_stale_one(
        consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    stale, _ = _backup(env, 0, "+4y")
    latest, _ = _backup(env, 1)
    wanted = tree_state(env.root)
    env.repo.store.delete(env.cfg.layout.head)

    restored = tmp_path / "restored"
    proc = env.run("restore", STATESYNC_ROOT=str(restored))
    assert proc.returncode == 0, proc.stderr
    assert tree_state(restored) == wanted

    proc = env.run("backup")  # a writer puts the lost head back before it commits
    assert proc.returncode == 0, proc.stderr
    assert env.repo.head().record.id == latest != stale


def test_a_commit_whose_clock_runs_behind_the_newest_snapshot_warns_once_with_both_times(consul, prefix, tmp_path,
                                                                                         make_cfg):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    ahead, _ = _backup(env, 0, "+1y")
    _, proc = _backup(env, 1)
    [warning] = _clock_warnings(proc.stderr)
    assert warning["snapshot"] == ahead
    assert datetime.fromisoformat(warning["snapshot_clock"]) == id_time(ahead)
    assert datetime.fromisoformat(warning["clock"]) < id_time(ahead)

    # A long-lived writer (the sidecar's) warns once, not at every commit while its clock is behind
    # (here: behind each commit a writer one year ahead makes in between).
    cfg = make_cfg(prefix=prefix, node=env.node, root=str(env.root))
    repo = open_repo(cfg)
    scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size)
    known: set[str] = set()
    with structlog.testing.capture_logs() as logs:
        for n in range(3):
            _backup(env, 10 + n, "+1y")
            (env.root / "icinga2.state").write_bytes(os.urandom(3000) + bytes([n]))
            assert repo.commit(scanner.scan(known), repo.head(), known) is not None
    assert len([e for e in logs if "clock runs behind" in e["event"]]) == 1


def test_a_commit_whose_clock_is_right_after_a_right_one_does_not_warn(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    icinga_tree(env.root)
    _backup(env, 0, "-1d")
    _, proc = _backup(env, 1)
    assert _clock_warnings(proc.stderr) == []
