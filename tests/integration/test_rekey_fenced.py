"""`statesync rekey` is the node's writer while it works: it refuses while the node's sidecar
holds the writer lock, so that no snapshot is left under the old key, and succeeds once it is stopped."""
from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from statesync.snapshot.crypto import Sealer, parse_key

from ..sidecar import Sidecar
from ..support import plain_lines, tree_state, wait_for
from .test_restore_safety import Env, icinga_tree

pytestmark = pytest.mark.consul


def _keyfile(env: Env, name: str) -> tuple[str, str]:
    path = env.root.parent / name
    proc = env.run("keygen", "--out", str(path))
    assert proc.returncode == 0, proc.stderr
    return str(path), Sealer(parse_key(path.read_bytes())).key_id


def _key_ids(env: Env) -> dict[str, str]:
    return {r.id: r.key_id for r in env.repo.records()}


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in plain_lines(proc.stderr) if not line.startswith("{")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_rekey_refuses_while_the_sidecar_commits_and_succeeds_once_it_is_stopped(consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    (old_key, old_id), (new_key, new_id) = _keyfile(env, "old"), _keyfile(env, "new")
    icinga_tree(env.root)
    sidecar = Sidecar(env.env(STATESYNC_ENCRYPTION_KEY_FILE=old_key, STATESYNC_DEBOUNCE="0.05", STATESYNC_MAX_WAIT="0.2"),
                      tmp_path / "sidecar.log")
    stop = threading.Event()

    def churn():
        n = 0
        while not stop.wait(0.05):
            n += 1
            (env.root / "icinga2.state").write_bytes(os.urandom(2000) + str(n).encode())

    writer = threading.Thread(target=churn, daemon=True)
    try:
        wait_for(lambda: len(_key_ids(env)) >= 1, 30, what="the sidecar's first commit", step=0.1,
                 details=lambda: (tmp_path / "sidecar.log").read_text()[-2000:])
        writer.start()
        before = env.repo.head().record.id
        wait_for(lambda: env.repo.head().record.id != before, 120, what="the sidecar committing the churn", step=0.05)
        proc = env.run("rekey", "--new-key-file", new_key, STATESYNC_ENCRYPTION_KEY_FILE=old_key)
        time.sleep(1.0)  # the sidecar keeps committing, under the key it was started with
        # The head first, then the records: the sidecar goes on committing, and a head read after
        # the records may name a commit they do not hold yet.
        head = env.repo.head().record.id
        ids = _key_ids(env)
        assert proc.returncode == 1, f"rekey raced the running sidecar (exit {proc.returncode}): key ids {ids}"
        line = _one_error_line(proc)
        assert line.startswith("statesync: error: the writer lock of node 'master1' is held by ")
        assert f"pid {sidecar.pid} since " in line and "stop the node's sidecar" in line
        assert set(ids.values()) == {old_id}, "rekey changed nothing while refusing"
        assert head in ids
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(5)
        assert sidecar.stop() == 0
    # everything the sidecar did not commit before it stopped, then the rekey with nobody else writing
    assert env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=old_key).returncode == 0
    final = tree_state(env.root)
    proc = env.run("rekey", "--new-key-file", new_key, STATESYNC_ENCRYPTION_KEY_FILE=old_key)
    assert proc.returncode == 0, proc.stderr
    assert set(_key_ids(env).values()) == {new_id}
    target = tmp_path / "restored"
    proc = env.run("restore", STATESYNC_ROOT=str(target), STATESYNC_ENCRYPTION_KEY_FILE=new_key)
    assert proc.returncode == 0, proc.stderr
    assert tree_state(target) == final


def test_a_rekey_beside_an_idle_sidecar_is_refused_so_its_next_commit_cannot_land_under_the_old_key(
        consul, prefix, tmp_path):
    env = Env(consul, prefix, tmp_path / "root")
    (old_key, old_id), (new_key, _) = _keyfile(env, "old"), _keyfile(env, "new")
    icinga_tree(env.root)
    sidecar = Sidecar(env.env(STATESYNC_ENCRYPTION_KEY_FILE=old_key, STATESYNC_DEBOUNCE="0.05", STATESYNC_MAX_WAIT="0.2"),
                      tmp_path / "sidecar.log")
    try:
        wait_for(lambda: len(_key_ids(env)) >= 1, 30, what="the sidecar's first commit", step=0.1)
        proc = env.run("rekey", "--new-key-file", new_key, STATESYNC_ENCRYPTION_KEY_FILE=old_key)
        before = env.repo.head().record.id
        (env.root / "icinga2.state").write_bytes(b"changed after the rekey")
        wait_for(lambda: env.repo.head().record.id != before, 120, what="the sidecar's next commit", step=0.05)
        head = env.repo.head().record
        restored = env.run("restore", STATESYNC_ROOT=str(tmp_path / "restored"), STATESYNC_ENCRYPTION_KEY_FILE=new_key)
        assert proc.returncode == 1, (f"rekey ran beside the sidecar (exit {proc.returncode}); its next snapshot "
                                      f"has key id {head.key_id}, a restore with the new key exits "
                                      f"{restored.returncode}: {restored.stderr.strip()[-200:]}")
        assert "is held by" in _one_error_line(proc)
        assert head.key_id == old_id and set(_key_ids(env).values()) == {old_id}
    finally:
        assert sidecar.stop() == 0
