"""Safe defaults (issue 15): private keys never leave a node in plain text unless asked to,
typos in settings are errors, and ``restore --if-empty`` never quietly starts a fresh CA.

Real ``statesync`` processes against the session's Consul agent. The environment built
here carries no opt-out: these tests are about what happens by default.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from statesync import config
from statesync.consul.store import Store

from ..sidecar import statesync_env
from ..support import make_tree, plain_lines, statesync_cmd, stop_process, tree_state, wait_for
from .test_restore_safety import make_ca_pem

pytestmark = pytest.mark.consul

KEY_HINT = 'create one with "statesync keygen --out FILE" and set encryption_key_file, or pass --allow-plaintext-secrets'


def _cli(consul, prefix, root, *args, node="master1", timeout=60, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(statesync_cmd(*args), env=statesync_env(consul.addr, prefix, root, node, **extra, plaintext=False), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    lines = plain_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("statesync: error: "), proc.stderr
    return lines[0]


def _store(consul) -> Store:
    return Store(config.load({"consul.addr": [consul.addr], "node": "reader"}, env={}).consul)


def _values(consul, prefix: str) -> list[bytes]:
    return [p.value for p in _store(consul).get_prefix(prefix + "/")]


def _tree_with_keys(root: Path) -> list[bytes]:
    """make_tree's tree, plus a PEM private key found by its content in a file larger than a
    chunk (so its pieces would stream up while the scan goes on); returns the secret bytes."""
    make_tree(root)
    _, pem = make_ca_pem("node")
    bundle = pem + b"# " + os.urandom(300 * 1024).hex().encode() + b"\n"
    (root / "certs/bundle.pem").write_bytes(bundle)
    return [(root / "ca/ca.key").read_bytes(), pem, bundle[len(pem):len(pem) + 4096], bundle[-4096:]]


# -- 4. private keys are refused without an encryption key -----------------------------------

def test_backup_without_a_key_refuses_a_tree_holding_private_keys_and_uploads_none_of_them(consul, prefix, tmp_path):
    root = tmp_path / "root"
    secrets = _tree_with_keys(root)
    before = tree_state(root)
    proc = _cli(consul, prefix, root, "backup")
    assert proc.returncode == 1, proc.stderr
    line = _error_line(proc)
    assert "is a secret (a private key, the TicketSalt or passwords) and no encryption key is configured" in line and line.endswith(KEY_HINT)
    assert "ca/ca.key" in line or "certs/bundle.pem" in line
    values = _values(consul, prefix)
    for v in values:
        assert b"PRIVATE KEY" not in v
        assert not any(s in v for s in secrets)
    assert not any(p.key.endswith("/head") for p in _store(consul).get_prefix(prefix + "/"))
    assert tree_state(root) == before


def test_a_pem_key_under_any_name_is_refused_too(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    _, pem = make_ca_pem("node")
    (root / "zones.conf").write_text("object Zone \"master\" {}\n")
    (root / "odd-name.txt").write_bytes(pem)
    proc = _cli(consul, prefix, root, "backup")
    assert proc.returncode == 1
    assert _error_line(proc) == f"statesync: error: odd-name.txt is a secret (a private key, the TicketSalt or passwords) and no encryption key is " \
                                f"configured: {KEY_HINT}"


def test_backup_with_allow_plaintext_secrets_uploads_and_still_warns(consul, prefix, tmp_path):
    root = tmp_path / "root"
    _tree_with_keys(root)
    proc = _cli(consul, prefix, root, "backup", "--allow-plaintext-secrets")
    assert proc.returncode == 0, proc.stderr
    assert "PLAIN TEXT" in proc.stderr and "ca/ca.key" in proc.stderr


def test_the_opt_out_can_be_given_by_the_environment(consul, prefix, tmp_path):
    root = tmp_path / "root"
    _tree_with_keys(root)
    proc = _cli(consul, prefix, root, "backup", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    assert proc.returncode == 0, proc.stderr


def test_backup_with_a_key_needs_no_opt_out(consul, prefix, tmp_path):
    root = tmp_path / "root"
    secrets = _tree_with_keys(root)
    key = tmp_path / "statesync.key"
    assert _cli(consul, prefix, root, "keygen", "--out", str(key)).returncode == 0
    proc = _cli(consul, prefix, root, "backup", STATESYNC_ENCRYPTION_KEY_FILE=str(key))
    assert proc.returncode == 0, proc.stderr
    assert not any(s in v for v in _values(consul, prefix) for s in secrets)


def test_a_tree_without_private_keys_backs_up_without_a_key(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "icinga2.state").write_text("state")
    assert _cli(consul, prefix, root, "backup").returncode == 0


def test_the_sidecar_without_a_key_exits_with_one_line_instead_of_uploading_keys(consul, prefix, tmp_path):
    root = tmp_path / "root"
    secrets = _tree_with_keys(root)
    env = statesync_env(consul.addr, prefix, root, "master1", STATESYNC_READY_FILE=str(tmp_path / "ready"), plaintext=False)
    proc = subprocess.Popen(statesync_cmd("run", "--role", "master"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        stop_process(proc, 10)
        out, err = proc.communicate()
        raise AssertionError(
            f"the sidecar kept running with private keys and no encryption key:\n{err[-2000:]}") from None
    assert proc.returncode == 1, err
    line = _error_line(subprocess.CompletedProcess([], 1, out, err))
    assert "is a secret (a private key, the TicketSalt or passwords) and no encryption key is configured" in line
    assert not any(s in v for v in _values(consul, prefix) for s in secrets)


# -- 5. typos are errors -----------------------------------------------------------------------

def test_a_misspelled_variable_is_a_usage_error_naming_the_right_one_and_nothing_is_uploaded(
        consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    key = tmp_path / "statesync.key"
    assert _cli(consul, prefix, root, "keygen", "--out", str(key)).returncode == 0
    proc = _cli(consul, prefix, root, "backup", STATESYNC_ENCRYPTION_KEYFILE=str(key),
                STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    assert proc.returncode == 2
    assert _error_line(proc) == ("statesync: error: unknown variable STATESYNC_ENCRYPTION_KEYFILE "
                                 "(did you mean STATESYNC_ENCRYPTION_KEY_FILE?)")
    assert _values(consul, prefix) == []


def test_an_unknown_key_in_the_config_file_names_the_closest_setting(consul, prefix, tmp_path):
    cfg = tmp_path / "statesync.toml"
    cfg.write_text('encryption_keyfile = "/etc/statesync.key"\n')
    proc = _cli(consul, prefix, tmp_path, "snapshots", "--config", str(cfg))
    assert proc.returncode == 2
    line = _error_line(proc)
    assert line.startswith("statesync: error: encryption_keyfile: unknown setting in ")
    assert str(cfg) in line and line.endswith("(did you mean encryption_key_file?)")


def test_run_without_a_role_is_a_usage_error_and_signals_nothing(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ready = tmp_path / "ready"
    try:
        proc = _cli(consul, prefix, root, "run", timeout=60, STATESYNC_READY_FILE=str(ready))
    except subprocess.TimeoutExpired:
        raise AssertionError("run without a role went on running (as some default role)") from None
    assert proc.returncode == 2
    assert "--role master or --role satellite" in _error_line(proc)
    assert not ready.exists()
    assert _values(consul, prefix) == []


def test_the_role_may_come_from_the_environment(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    ready = tmp_path / "ready"
    env = statesync_env(consul.addr, prefix, root, "master1", STATESYNC_ROLE="master", STATESYNC_READY_FILE=str(ready), plaintext=False)
    proc = subprocess.Popen(statesync_cmd("run"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        head = f"{prefix}/nodes/master1/head"
        wait_for(lambda: _store(consul).get(head) is not None or proc.poll() is not None, 30, "a first commit")
        assert ready.exists(), proc.poll()
    finally:
        assert stop_process(proc, 20) == 0


# -- 6. restore --if-empty never quietly starts a fresh CA --------------------------------------

@pytest.fixture
def backed_up(consul, prefix, tmp_path):
    """Node master1 has a snapshot under the prefix."""
    root = tmp_path / "source"
    make_tree(root)
    proc = _cli(consul, prefix, root, "backup", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    assert proc.returncode == 0, proc.stderr
    return root


def test_if_empty_with_a_mistyped_node_is_refused_naming_the_nodes_that_have_snapshots(
        consul, prefix, tmp_path, backed_up):
    target, ready = tmp_path / "target", tmp_path / "ready"
    proc = _cli(consul, prefix, target, "restore", "--if-empty", node="mastr1", STATESYNC_READY_FILE=str(ready))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _error_line(proc)
    assert "no snapshot of node mastr1" in line and "node(s) master1 have snapshots" in line and "--fresh" in line
    assert not ready.exists()
    assert not target.exists() or not any(p for p in target.iterdir() if not p.name.startswith(".statesync-"))


def test_if_empty_lets_a_new_satellite_join_a_prefix_with_other_nodes(consul, prefix, tmp_path, backed_up):
    ready = tmp_path / "ready"
    proc = _cli(consul, prefix, tmp_path / "target", "restore", "--if-empty", node="satellite7",
                STATESYNC_ROLE="satellite", STATESYNC_READY_FILE=str(ready))
    assert proc.returncode == 0, proc.stderr
    assert "nothing restored" in proc.stdout
    assert ready.exists()


def test_if_empty_with_only_a_published_ca_is_refused(consul, prefix, tmp_path):
    _store(consul).put(f"{prefix}/ca", b'{"v": 1}')
    ready = tmp_path / "ready"
    proc = _cli(consul, prefix, tmp_path / "target", "restore", "--if-empty", STATESYNC_READY_FILE=str(ready))
    assert proc.returncode == 1
    assert f"a CA is published at {prefix}/ca" in _error_line(proc)
    assert not ready.exists()


def test_if_empty_on_an_empty_prefix_is_a_fresh_installation_and_signals_ready(consul, prefix, tmp_path):
    ready = tmp_path / "ready"
    proc = _cli(consul, prefix, tmp_path / "target", "restore", "--if-empty", STATESYNC_READY_FILE=str(ready))
    assert proc.returncode == 0, proc.stderr
    assert "nothing restored" in proc.stdout
    assert ready.exists()


def test_fresh_states_a_new_node_explicitly_and_signals_ready(consul, prefix, tmp_path, backed_up):
    ready = tmp_path / "ready"
    proc = _cli(consul, prefix, tmp_path / "target", "restore", "--if-empty", "--fresh", node="satellite9",
                STATESYNC_READY_FILE=str(ready))
    assert proc.returncode == 0, proc.stderr
    assert ready.exists()


def test_fresh_without_if_empty_is_a_usage_error(consul, prefix, tmp_path):
    proc = _cli(consul, prefix, tmp_path / "target", "restore", "--fresh")
    assert proc.returncode == 2
    assert "--fresh: only with --if-empty" in _error_line(proc)


def test_if_empty_for_a_node_with_a_snapshot_still_restores_it(consul, prefix, tmp_path, backed_up):
    target, ready = tmp_path / "target", tmp_path / "ready"
    proc = _cli(consul, prefix, target, "restore", "--if-empty", STATESYNC_READY_FILE=str(ready))
    assert proc.returncode == 0, proc.stderr
    assert tree_state(target) == tree_state(backed_up) and ready.exists()
