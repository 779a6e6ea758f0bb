"""Least-privilege ACL tokens made from config/acl/*.hcl, on a Consul with ACLs on and default deny.

The statesync CLI runs as a subprocess with its token in a 0600 CONSUL_HTTP_TOKEN_FILE; every
run also checks that no token appears in its output (see acl_support.run_cli).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import uuid

import pytest

from statesync import config
from statesync.consul.client import Op
from statesync.consul.store import Store
from statesync.errors import PermissionDenied
from statesync.repo.repository import Repo

from .acl_support import ACL_DIR, AGENT_NODE, PREFIX, one_error_line, run_cli
from .support import clean_env, make_tree, statesync_cmd, tree_state

pytestmark = pytest.mark.consul

MASTER_PREFIX = f"{PREFIX}/nodes/master1/"
CA_KEY = f"{PREFIX}/ca"


@pytest.fixture(scope="module")
def tokens(acl_consul):
    """One token per example policy: master1's, sat1's, and a restore token for master1."""
    return {"master": acl_consul.token("master.hcl", "master1"),
            "satellite": acl_consul.token("satellite.hcl", "sat1"),
            "restore": acl_consul.token("restore.hcl", "master1")}


@pytest.fixture
def cli(acl_consul, tmp_path):
    def run(token: str, *args: str, node: str, root=None, **extra):
        return run_cli(acl_consul, tmp_path, token, *args, node=node, root=root or tmp_path / f"root-{node}", **extra)
    return run


@pytest.fixture
def master_backup(acl_consul, tokens, cli, tmp_path):
    """master1 backs up a tree with its own token; returns the tree's state."""
    root = tmp_path / "master1"
    make_tree(root)
    (root / "icinga2.state").write_bytes(os.urandom(3000))
    proc = cli(tokens["master"], "backup", node="master1", root=root)
    assert proc.returncode == 0, proc.stderr
    return tree_state(root)


def node_config(acl_consul, node: str = "master1") -> config.Config:
    return config.load({"consul.addr": [acl_consul.addr], "node": node, "prefix": PREFIX}, env={})


def master_store(acl_consul, token: str) -> Store:
    """statesync's own Store, in process, with ``token``."""
    return Store(dataclasses.replace(node_config(acl_consul).consul, token=token))


def rules(name: str) -> str:
    """A policy file without its comments."""
    return "\n".join(line for line in (ACL_DIR / name).read_text().splitlines() if not line.startswith("#"))


def chunk_keys(acl_consul, tokens) -> list[str]:
    code, out = acl_consul.api("GET", f"/v1/kv/{MASTER_PREFIX}chunks/?keys", tokens["master"])
    assert code == 200, out
    return json.loads(out)


def test_the_example_policies_use_the_placeholders_the_readme_documents():
    readme = (ACL_DIR / "README.md").read_text()
    for name in ("master.hcl", "satellite.hcl", "restore.hcl"):
        assert name in readme
        assert 'key_prefix "statesync/icinga2/nodes/NODE/"' in rules(name)
    assert "`NODE`" in readme and "`AGENT`" in readme
    assert 'session "AGENT"' in rules("master.hcl") and 'session "AGENT"' in rules("satellite.hcl")
    assert 'key "statesync/icinga2/ca"' in rules("master.hcl") and 'key "statesync/icinga2/ca"' in rules("satellite.hcl")
    assert "session" not in rules("restore.hcl") and '"write"' not in rules("restore.hcl")


def test_the_master_token_backs_up_its_node_publishes_the_ca_and_may_hold_a_session_lock(
        acl_consul, tokens, cli, master_backup):
    listed = cli(tokens["master"], "snapshots", node="master1")
    assert listed.returncode == 0 and "ID" in listed.stdout, listed.stderr
    code, _ = acl_consul.api("PUT", f"/v1/kv/{CA_KEY}", tokens["master"], b"-----BEGIN CERTIFICATE-----")
    assert code == 200
    code, out = acl_consul.api("PUT", "/v1/session/create", tokens["master"],
                               json.dumps({"Node": AGENT_NODE, "Name": "statesync-master1", "TTL": "10s"}).encode())
    assert code == 200, out
    session = json.loads(out)["ID"]
    code, out = acl_consul.api("PUT", f"/v1/kv/{MASTER_PREFIX}lock?acquire={session}", tokens["master"], b"")
    assert (code, out.strip()) == (200, b"true")
    acl_consul.api("PUT", f"/v1/session/destroy/{session}", tokens["master"])


def test_the_master_token_cannot_write_under_another_nodes_prefix(acl_consul, tokens):
    code, _ = acl_consul.api("PUT", f"/v1/kv/{PREFIX}/nodes/sat1/head", tokens["master"], b"{}")
    assert code == 403


def test_a_satellite_token_backs_up_its_own_node_and_reads_but_never_writes_the_published_ca(
        acl_consul, tokens, cli, tmp_path):
    assert acl_consul.api("PUT", f"/v1/kv/{CA_KEY}", tokens["master"], b"the published CA")[0] == 200
    root = tmp_path / "sat1"
    make_tree(root)
    proc = cli(tokens["satellite"], "backup", node="sat1", root=root)
    assert proc.returncode == 0, proc.stderr
    assert cli(tokens["satellite"], "snapshots", node="sat1").returncode == 0
    code, out = acl_consul.api("GET", f"/v1/kv/{CA_KEY}?raw", tokens["satellite"])
    assert (code, out) == (200, b"the published CA")
    assert acl_consul.api("PUT", f"/v1/kv/{CA_KEY}", tokens["satellite"], b"a forged CA")[0] == 403
    code, out = acl_consul.api("PUT", "/v1/session/create", tokens["satellite"],
                               json.dumps({"Node": AGENT_NODE, "Name": "statesync-sat1", "TTL": "10s"}).encode())
    assert code == 200, out
    acl_consul.api("PUT", f"/v1/session/destroy/{json.loads(out)['ID']}", tokens["satellite"])


def test_a_satellite_token_can_read_neither_the_masters_snapshots_nor_its_key_chunks(
        acl_consul, tokens, cli, master_backup, tmp_path):
    proc = cli(tokens["satellite"], "restore", "--node", "master1", node="sat1", root=tmp_path / "stolen")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert MASTER_PREFIX in line and "lacks read permission" in line
    assert not (tmp_path / "stolen").exists() or not any((tmp_path / "stolen").iterdir())

    proc = cli(tokens["satellite"], "snapshots", "--node", "master1", node="sat1")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert MASTER_PREFIX in line and "lacks read permission" in line

    keys = chunk_keys(acl_consul, tokens)
    assert keys, "the master's backup wrote chunks"
    for key in keys:  # among them the chunk holding ca/ca.key
        code, body = acl_consul.api("GET", f"/v1/kv/{key}", tokens["satellite"])
        assert code == 403 and b"secret-key-material" not in body
    code, body = acl_consul.api("GET", f"/v1/kv/{MASTER_PREFIX}?recurse", tokens["satellite"])
    assert code in (403, 404) and b"Value" not in body
    code, body = acl_consul.api("GET", f"/v1/kv/{MASTER_PREFIX}?keys", tokens["satellite"])
    assert code in (403, 404) and b"chunks" not in body


def test_a_satellite_token_cannot_write_under_the_masters_prefix(acl_consul, tokens, cli, master_backup, tmp_path):
    master = master_store(acl_consul, tokens["master"])
    head_before = master.get(f"{MASTER_PREFIX}head")
    # by the CLI: the first thing it needs is the master's head, which it may not even read
    root = tmp_path / "forged"
    make_tree(root)
    proc = cli(tokens["satellite"], "backup", "--node", "master1", node="sat1", root=root)
    assert proc.returncode == 1
    assert MASTER_PREFIX in one_error_line(proc)
    # straight to Consul: a plain PUT, a transaction, a delete
    assert acl_consul.api("PUT", f"/v1/kv/{MASTER_PREFIX}head", tokens["satellite"], b"{}")[0] == 403
    assert acl_consul.api("PUT", f"/v1/kv/{MASTER_PREFIX}chunks/{'0' * 64}", tokens["satellite"], b"x")[0] == 403
    assert acl_consul.api("DELETE", f"/v1/kv/{MASTER_PREFIX}?recurse", tokens["satellite"])[0] == 403
    txn = [{"KV": {"Verb": "set", "Key": f"{MASTER_PREFIX}snapshots/forged", "Value": "e30="}}]
    code, _ = acl_consul.api("PUT", "/v1/txn", tokens["satellite"], json.dumps(txn).encode())
    assert code in (403, 409)
    # and statesync's own store says which permission is missing, and where
    sat = master_store(acl_consul, tokens["satellite"])
    with pytest.raises(PermissionDenied, match=f"{MASTER_PREFIX}head.*lacks write permission"):
        sat.put(f"{MASTER_PREFIX}head", b"{}")
    with pytest.raises(PermissionDenied, match=f"{MASTER_PREFIX}snapshots/forged.*lacks write permission"):
        sat.txn([Op("set", f"{MASTER_PREFIX}snapshots/forged", b"{}")])
    assert master.get(f"{MASTER_PREFIX}head") == head_before
    assert f"{MASTER_PREFIX}snapshots/forged" not in master.keys(MASTER_PREFIX)


def test_the_restore_token_restores_the_node_but_cannot_write_to_it(acl_consul, tokens, cli, master_backup, tmp_path):
    target = tmp_path / "rebuilt"
    proc = cli(tokens["restore"], "restore", "--node", "master1", node="master1", root=target)
    assert proc.returncode == 0, proc.stderr
    assert tree_state(target) == master_backup
    assert cli(tokens["restore"], "snapshots", node="master1").returncode == 0

    master = master_store(acl_consul, tokens["master"])
    head_before = master.get(f"{MASTER_PREFIX}head")
    (target / "icinga2.state").write_bytes(b"changed after the restore")
    proc = cli(tokens["restore"], "backup", node="master1", root=target)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert MASTER_PREFIX in line and "lacks write permission" in line
    assert master.get(f"{MASTER_PREFIX}head") == head_before
    assert acl_consul.api("PUT", f"/v1/kv/{CA_KEY}", tokens["restore"], b"x")[0] == 403
    code, _ = acl_consul.api("PUT", "/v1/session/create", tokens["restore"], json.dumps({"Node": AGENT_NODE}).encode())
    assert code == 403


def test_a_denied_read_is_one_line_naming_the_key_prefix_and_the_read_permission(acl_consul, tokens, cli):
    proc = cli(tokens["restore"], "snapshots", "--node", "sat1", node="master1")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert f"{PREFIX}/nodes/sat1/" in line
    assert "permission denied: the token may not read" in line and "lacks read permission" in line


def test_without_any_token_default_deny_refuses_every_read(acl_consul, master_backup):
    repo = Repo(master_store(acl_consul, ""), node_config(acl_consul).layout, 4096)
    with pytest.raises(PermissionDenied, match="no ACL token configured"):
        repo.head()


# -- which of Consul's refusals it was, in one line ------------------------------------

def _cli_without_token(acl_consul, *args: str, root) -> subprocess.CompletedProcess:
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=acl_consul.addr, STATESYNC_NODE="master1", STATESYNC_ROOT=str(root),
               STATESYNC_PREFIX=PREFIX, STATESYNC_LOG_FORMAT="json")
    return subprocess.run(statesync_cmd(*args), env=env, capture_output=True, text=True, timeout=60)


def test_without_a_token_the_one_line_says_that_no_token_is_configured_not_that_one_lacks_a_right(
        acl_consul, master_backup, tmp_path):
    root = tmp_path / "no-token"
    make_tree(root)
    for args in (("snapshots",), ("backup",), ("restore", "--dry-run")):
        proc = _cli_without_token(acl_consul, *args, root=root)
        assert proc.returncode == 1, proc.stderr
        line = one_error_line(proc)
        assert "no ACL token configured (set consul.token_file / CONSUL_HTTP_TOKEN_FILE)" in line, line
        assert "may not" not in line and "lacks" not in line and "does not know" not in line
    with pytest.raises(PermissionDenied, match="^Consul refused session creation: no ACL token configured"):
        master_store(acl_consul, "").session_create("statesync", 10, 0)


def test_an_unknown_token_is_named_unknown_for_reads_writes_and_sessions(acl_consul, cli, tmp_path):
    unknown = str(uuid.uuid4())
    acl_consul.secrets.append(unknown)
    root = tmp_path / "unknown"
    make_tree(root)
    for args in (("snapshots",), ("backup",)):
        proc = cli(unknown, *args, node="master1", root=root)
        assert proc.returncode == 1
        line = one_error_line(proc)
        assert "Consul does not know the ACL token (deleted, expired, or from another cluster)" in line, line
        assert "may not" not in line and "lacks" not in line
    store = master_store(acl_consul, unknown)
    for call in (lambda: store.session_create("statesync", 10, 0), lambda: store.put(CA_KEY, b"x"),
                 lambda: store.txn([Op("set", f"{MASTER_PREFIX}head", b"{}")])):
        with pytest.raises(PermissionDenied, match="Consul does not know the ACL token") as caught:
            call()
        assert "lacks" not in str(caught.value)


def test_a_token_without_the_right_is_told_which_operation_on_which_key_it_may_not_do(acl_consul, tokens, cli,
                                                                                      master_backup, tmp_path):
    sat = master_store(acl_consul, tokens["satellite"])
    restore = master_store(acl_consul, tokens["restore"])
    cases = [(lambda: sat.get(f"{MASTER_PREFIX}head"), f"the token may not read '{MASTER_PREFIX}head'"),
             (lambda: sat.put(CA_KEY, b"forged"), f"the token may not write '{CA_KEY}'"),
             (lambda: sat.txn([Op("set", CA_KEY, b"forged")]), f"the token may not write '{CA_KEY}'"),
             (lambda: sat.delete(CA_KEY), f"the token may not delete '{CA_KEY}'"),
             (lambda: restore.session_create("statesync", 10, 0),
              "the token may not create a session (it lacks session write on the agent's node)")]
    for call, says in cases:
        with pytest.raises(PermissionDenied) as caught:
            call()
        assert str(caught.value).startswith("permission denied: ") and says in str(caught.value), str(caught.value)
    (tmp_path / "master1/icinga2.state").write_bytes(b"changed, so that the backup must write")
    proc = cli(tokens["restore"], "backup", node="master1", root=tmp_path / "master1")
    assert proc.returncode == 1
    assert f"permission denied: the token may not write '{MASTER_PREFIX}" in one_error_line(proc)
