"""Least-privilege ACL tokens made from config/acl/*.hcl, on a Consul with ACLs on and default deny.

The statesync CLI runs as a subprocess with its token in a 0600 CONSUL_HTTP_TOKEN_FILE; every
run also checks that no token appears in its output (see acl_support.run_cli).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import subprocess
import uuid

import pytest

from statesync import config
from statesync.consul.client import Op
from statesync.consul.store import Store
from statesync.errors import PermissionDenied
from statesync.repo.repository import Repo

from ..acl_support import ACL_DIR, AGENT_NODE, PREFIX, one_error_line, render, run_cli
from ..support import clean_env, make_tree, statesync_cmd, tree_state

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


def test_the_satellite_policy_grants_its_own_registration_as_an_exact_key_and_the_master_only_reads_them():
    readme = (ACL_DIR / "README.md").read_text()
    assert "`SATELLITE_CN`" in readme and "operator-satellites.hcl" in readme
    assert 'key "statesync/icinga2/satellites/SATELLITE_CN" {\n  policy = "write"\n}' in rules("satellite.hcl")
    assert 'key_prefix "statesync/icinga2/satellites/' not in rules("satellite.hcl")
    assert 'key_prefix "statesync/icinga2/satellites/" {\n  policy = "read"\n}' in rules("master.hcl")
    assert 'key "statesync/icinga2/satellites/' not in rules("master.hcl")
    operator = rules("operator-satellites.hcl")
    assert 'key_prefix "statesync/icinga2/satellites/" {\n  policy = "write"\n}' in operator
    assert operator.count("{") == 1 and "NODE" not in operator and "AGENT" not in operator


def test_the_readmes_sed_renders_every_policy_file_as_the_tests_do_and_touches_nothing_but_its_placeholders():
    """The tokens in this module are made by acl_support.render: it must do what the README's sed does."""
    readme = (ACL_DIR / "README.md").read_text()
    command = re.search(r'sed((?: -e "s/\w+/\$\w+/g")+)', readme)
    assert command, "README.md shows how to replace the placeholders with sed"
    pairs = re.findall(r'-e "s/(\w+)/\$(\w+)/g"', command.group(1))
    assert [placeholder for placeholder, _ in pairs] == ["NODE", "AGENT", "SATELLITE_CN"]
    values = {"NODE": "sat1-host", "AGENT": AGENT_NODE, "SATELLITE_CN": "sat1"}
    env = {**clean_env(), **{var: values[placeholder] for placeholder, var in pairs}}
    for path in sorted(ACL_DIR.glob("*.hcl")):
        text = path.read_text()
        for placeholder in values:  # each occurs as a word of its own, never inside another word
            assert len(re.findall(rf"(?<!\w){placeholder}(?!\w)", text)) == text.count(placeholder), \
                (path.name, placeholder)
        rendered = subprocess.run(["bash", "-c", f'sed{command.group(1)} "$1"', "sed", str(path)], env=env,
                                  capture_output=True, text=True, check=True).stdout
        assert rendered == render(path.name, values["NODE"], values["SATELLITE_CN"]), path.name
        assert not any(placeholder in rendered for placeholder in values), path.name
    assert 'key "statesync/icinga2/satellites/sat1" {' in render("satellite.hcl", "sat1-host", "sat1")
    assert 'key_prefix "statesync/icinga2/nodes/sat1-host/" {' in render("satellite.hcl", "sat1-host", "sat1")


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
        # a dry run compares, and compare commands say trouble with 2, as diff(1) does
        assert proc.returncode == (2 if "--dry-run" in args else 1), proc.stderr
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


# -- enrolment: one registration key per satellite, read by the master ---------------------

SATELLITES = f"{PREFIX}/satellites/"
OWN, OTHER, LONGER = f"{SATELLITES}sat1", f"{SATELLITES}sat2", f"{SATELLITES}sat10"  # sat1's token is CN sat1


@pytest.fixture
def registrations(acl_consul, tokens):
    """The tokens, with sat2's and sat10's registrations written by the management token; sat1 not registered."""
    def clear():  # the agent and the prefix are shared with the other tests of the session
        for key in (OWN, OTHER, LONGER, f"{SATELLITES}sat7", f"{SATELLITES}edge-7"):
            assert acl_consul.api("DELETE", f"/v1/kv/{key}", acl_consul.master)[0] == 200
    clear()
    for key in (OTHER, LONGER):
        assert acl_consul.api("PUT", f"/v1/kv/{key}", acl_consul.master, f"request of {key}".encode())[0] == 200
    yield {**tokens, "operator": acl_consul.token("operator-satellites.hcl", "operator")}
    clear()


def raw(acl_consul, key: str) -> bytes | None:
    """The value at ``key`` as the management token sees it; None when there is none."""
    code, body = acl_consul.api("GET", f"/v1/kv/{key}?raw", acl_consul.master)
    assert code in (200, 404), body
    return body if code == 200 else None


def test_a_satellite_token_writes_reads_and_deletes_its_own_registration(acl_consul, registrations):
    token = registrations["satellite"]
    assert acl_consul.api("PUT", f"/v1/kv/{OWN}", token, b"request of sat1") == (200, b"true\n")
    assert acl_consul.api("GET", f"/v1/kv/{OWN}?raw", token) == (200, b"request of sat1")
    assert acl_consul.api("PUT", f"/v1/kv/{OWN}", token, b"renewed request") == (200, b"true\n")
    assert raw(acl_consul, OWN) == b"renewed request"
    assert acl_consul.api("DELETE", f"/v1/kv/{OWN}", token) == (200, b"true\n")
    assert raw(acl_consul, OWN) is None
    # statesync's own store, in process, does the same with it
    sat = master_store(acl_consul, token)
    sat.put(OWN, b"by the store")
    assert sat.get(OWN).value == b"by the store"
    sat.delete(OWN)
    assert sat.get(OWN) is None


def test_the_registration_key_a_satellite_token_may_write_is_named_by_its_cn_not_by_its_node(acl_consul,
                                                                                               registrations):
    token = acl_consul.token("satellite.hcl", "edge-7", cn="sat7")
    assert acl_consul.api("PUT", f"/v1/kv/{SATELLITES}sat7", token, b"request of sat7")[0] == 200
    assert acl_consul.api("PUT", f"/v1/kv/{SATELLITES}edge-7", token, b"request of edge-7")[0] == 403
    assert acl_consul.api("PUT", f"/v1/kv/{PREFIX}/nodes/edge-7/head", token, b"{}")[0] == 200
    acl_consul.api("DELETE", f"/v1/kv/{PREFIX}/nodes/edge-7/head", acl_consul.master)


def test_a_satellite_token_cannot_register_another_cn_nor_one_that_merely_starts_with_its_own_nor_write_the_ca(
        acl_consul, registrations):
    token = registrations["satellite"]
    ca_before = raw(acl_consul, CA_KEY)
    for key in (OTHER, LONGER, f"{SATELLITES}sat1/sub", f"{SATELLITES}sat11", CA_KEY):
        assert acl_consul.api("PUT", f"/v1/kv/{key}", token, b"forged") == (403, b"Permission denied"), key
    for key in (OTHER, LONGER, CA_KEY):
        assert acl_consul.api("DELETE", f"/v1/kv/{key}", token)[0] == 403, key
    assert acl_consul.api("DELETE", f"/v1/kv/{SATELLITES}?recurse", token)[0] == 403
    assert raw(acl_consul, OTHER) == f"request of {OTHER}".encode()
    assert raw(acl_consul, LONGER) == f"request of {LONGER}".encode()
    assert raw(acl_consul, f"{SATELLITES}sat1/sub") is None and raw(acl_consul, f"{SATELLITES}sat11") is None
    assert raw(acl_consul, CA_KEY) == ca_before
    sat = master_store(acl_consul, token)
    with pytest.raises(PermissionDenied, match=f"may not write '{LONGER}'"):
        sat.put(LONGER, b"forged")
    with pytest.raises(PermissionDenied, match=f"may not delete '{OTHER}'"):
        sat.delete(OTHER)


def test_a_satellite_token_can_read_neither_another_satellites_registration_nor_the_masters_snapshots(
        acl_consul, registrations, master_backup):
    token = registrations["satellite"]
    for key in (OTHER, LONGER, f"{MASTER_PREFIX}head"):
        code, body = acl_consul.api("GET", f"/v1/kv/{key}", token)
        assert (code, body) == (403, b"Permission denied"), key
    code, body = acl_consul.api("GET", f"/v1/kv/{MASTER_PREFIX}snapshots/?recurse", token)
    assert code == 404 and body == b""  # filtered away: the master has snapshots (master_backup)
    assert acl_consul.api("GET", f"/v1/kv/{MASTER_PREFIX}snapshots/?keys", registrations["master"])[0] == 200
    with pytest.raises(PermissionDenied, match=f"may not read '{OTHER}'"):
        master_store(acl_consul, token).get(OTHER)


def test_a_recursive_read_of_the_registrations_with_a_satellite_token_lists_its_own_key_only(acl_consul,
                                                                                              registrations):
    token = registrations["satellite"]
    # Consul 1.8.7 filters what the token may not read out of a listing: with nothing it may
    # read the answer is a 404 with an empty body, as for an empty prefix ...
    assert acl_consul.api("GET", f"/v1/kv/{SATELLITES}?recurse", token) == (404, b"")
    assert acl_consul.api("GET", f"/v1/kv/{SATELLITES}?keys", token) == (404, b"")
    # ... and once it registered, a 200 listing its own key alone, though sat2 and sat10 are there.
    assert acl_consul.api("PUT", f"/v1/kv/{OWN}", token, b"request of sat1")[0] == 200
    code, body = acl_consul.api("GET", f"/v1/kv/{SATELLITES}?recurse", token)
    assert code == 200
    assert [(e["Key"], base64.b64decode(e["Value"])) for e in json.loads(body)] == [(OWN, b"request of sat1")]
    code, body = acl_consul.api("GET", f"/v1/kv/{SATELLITES}?keys", token)
    assert (code, json.loads(body)) == (200, [OWN])
    assert [p.key for p in master_store(acl_consul, token).get_prefix(SATELLITES)] == [OWN]
    # the prefix itself, read as a key, is denied outright
    assert acl_consul.api("GET", f"/v1/kv/{SATELLITES}", token)[0] == 403


def test_a_transaction_writing_its_own_and_another_cns_registration_is_refused_whole(acl_consul, registrations):
    token = registrations["satellite"]
    assert acl_consul.api("PUT", f"/v1/kv/{OWN}", token, b"before")[0] == 200
    txn = [{"KV": {"Verb": "set", "Key": OWN, "Value": base64.b64encode(b"after").decode()}},
           {"KV": {"Verb": "set", "Key": f"{SATELLITES}sat3", "Value": base64.b64encode(b"forged").decode()}},
           {"KV": {"Verb": "set", "Key": OTHER, "Value": base64.b64encode(b"forged").decode()}}]
    code, body = acl_consul.api("PUT", "/v1/txn", token, json.dumps(txn).encode())
    assert code == 409  # Consul 1.8.7: a 409 naming each denied operation, nothing applied
    assert json.loads(body) == {"Results": None, "Errors": [{"OpIndex": 1, "What": "Permission denied"},
                                                            {"OpIndex": 2, "What": "Permission denied"}]}
    assert raw(acl_consul, OWN) == b"before"
    assert raw(acl_consul, f"{SATELLITES}sat3") is None
    assert raw(acl_consul, OTHER) == f"request of {OTHER}".encode()
    # the same through statesync's store: a PermissionDenied naming the first key it may not write
    sat = master_store(acl_consul, token)
    with pytest.raises(PermissionDenied, match=f"the token may not write '{LONGER}'"):
        sat.txn([Op("set", OWN, b"after"), Op("set", LONGER, b"forged")])
    assert raw(acl_consul, OWN) == b"before"
    assert raw(acl_consul, LONGER) == f"request of {LONGER}".encode()


def test_the_master_token_reads_every_registration_by_blocking_recursive_query_but_cannot_write_or_delete_one(
        acl_consul, registrations):
    master = master_store(acl_consul, registrations["master"])
    assert {p.key for p in master.get_prefix(SATELLITES)} >= {OTHER, LONGER}
    assert {OTHER, LONGER} <= set(master.keys(SATELLITES))
    assert master.get(OTHER).value == f"request of {OTHER}".encode()
    # the blocking query the master's sidecar makes: it wakes when a satellite registers
    index, _ = master.consul.kv.get(SATELLITES, recurse=True)
    assert acl_consul.api("PUT", f"/v1/kv/{OWN}", registrations["satellite"], b"request of sat1")[0] == 200
    new_index, items = master.consul.kv.get(SATELLITES, recurse=True, index=index, wait="5s")
    assert int(new_index) > int(index)
    assert {i["Key"]: i["Value"] for i in items}[OWN] == b"request of sat1"
    # never a write: not a registration of its own, not a change, not a delete
    token = registrations["master"]
    for key in (OWN, OTHER, f"{SATELLITES}master1"):
        assert acl_consul.api("PUT", f"/v1/kv/{key}", token, b"by the master") == (403, b"Permission denied"), key
        assert acl_consul.api("DELETE", f"/v1/kv/{key}", token)[0] == 403, key
    assert acl_consul.api("DELETE", f"/v1/kv/{SATELLITES}?recurse", token)[0] == 403
    txn = [{"KV": {"Verb": "delete", "Key": OTHER}}]
    assert acl_consul.api("PUT", "/v1/txn", token, json.dumps(txn).encode())[0] == 409
    with pytest.raises(PermissionDenied, match=f"may not delete '{OWN}'"):
        master.delete(OWN)
    assert raw(acl_consul, OWN) == b"request of sat1" and raw(acl_consul, OTHER) == f"request of {OTHER}".encode()
    assert raw(acl_consul, f"{SATELLITES}master1") is None


def test_the_operator_policy_deletes_a_registration_to_un_accept_a_satellite_and_may_do_nothing_else(
        acl_consul, registrations, master_backup):
    token = registrations["operator"]
    code, body = acl_consul.api("GET", f"/v1/kv/{SATELLITES}?keys", token)
    assert code == 200 and {OTHER, LONGER} <= set(json.loads(body))
    assert acl_consul.api("DELETE", f"/v1/kv/{OTHER}", token) == (200, b"true\n")
    assert raw(acl_consul, OTHER) is None and raw(acl_consul, LONGER) is not None
    master_store(acl_consul, token).delete(LONGER)
    assert raw(acl_consul, LONGER) is None
    # nothing outside the registrations: no snapshot, no CA, no session
    assert acl_consul.api("GET", f"/v1/kv/{MASTER_PREFIX}head", token)[0] == 403
    assert acl_consul.api("PUT", f"/v1/kv/{CA_KEY}", token, b"forged")[0] == 403
    code, _ = acl_consul.api("PUT", "/v1/session/create", token, json.dumps({"Node": AGENT_NODE}).encode())
    assert code == 403
