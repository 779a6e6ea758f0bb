"""One published CA for the whole prefix (issue 15): master sidecars as real processes against the
real Consul never replace the published CA's key without an operator's recorded decision
(`statesync accept-ca`) or the permanent on_conflict=keep-local, and never fight each other."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.pki import cadoc, fingerprint

from ..certs import make_ca, renew
from ..guardkit import publish
from ..sidecar import Sidecar
from ..support import clean_env, free_ports, http_get, statesync_cmd, wait_for

pytestmark = pytest.mark.consul


class Fleet:
    """The prefix's published CA and the master sidecars started on it, each in its own directory."""

    def __init__(self, consul, prefix: str, base: Path):
        self.addr, self.prefix, self.base = consul.addr, prefix, base
        cfg = config.load({"prefix": prefix, "node": "x", "consul.addr": [consul.addr]}, env={})
        self.store, self.layout = Store(cfg.consul), cfg.layout
        self.sidecars: list[Sidecar] = []

    def root(self, node: str, ca=None) -> Path:
        """A master's Icinga 2 tree holding ``ca`` (a fresh one by default) as node setup leaves it."""
        root = self.base / node / "root"
        (root / "ca").mkdir(parents=True)
        (root / "certs").mkdir()
        ca = ca or make_ca()
        (root / "ca/ca.crt").write_bytes(ca.pem)
        (root / "ca/ca.key").write_text("not a real key")
        (root / "certs/ca.crt").write_bytes(ca.pem)
        (root / f"certs/{node}.crt").write_text("node certificate")
        (root / "icinga2.state").write_text("state")
        return root

    def master(self, node: str, root: Path, **env: str) -> Sidecar:
        sidecar = Sidecar.start(self.addr, self.prefix, root, root.parent / f"sidecar-{node}.log", node, "master", **{"STATESYNC_DEBOUNCE": "0.05", **env})
        self.sidecars.append(sidecar)
        return sidecar

    def published(self) -> cadoc.PublishedCA | None:
        pair = self.store.get(self.layout.ca)
        return cadoc.decode(pair.value) if pair is not None else None

    def published_key(self) -> str:
        doc = self.published()
        return doc.spki_sha256 if doc is not None else ""

    def wait_published(self, ca, what: str) -> cadoc.PublishedCA:
        return wait_for(lambda: (d := self.published()) and d.cert_sha256 == fingerprint.cert_sha256(ca.pem) and d,
                        15, what=what, step=0.02, details=self.tails)

    def cli(self, *args: str, node: str, root: Path, timeout: float = 60) -> subprocess.CompletedProcess:
        env = clean_env()
        env.update(CONSUL_HTTP_ADDR=self.addr, STATESYNC_PREFIX=self.prefix, STATESYNC_ROOT=str(root),
                   STATESYNC_NODE=node, STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
        return subprocess.run(statesync_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def tails(self) -> str:
        return "\n".join(f"--- {s.log.name}\n" + "\n".join(s.log.read_text().splitlines()[-8:])
                         for s in self.sidecars if s.log.exists())

    def stop(self) -> None:
        for s in self.sidecars:
            s.stop()


@pytest.fixture
def fleet(consul, prefix, tmp_path):
    f = Fleet(consul, prefix, tmp_path)
    yield f
    f.stop()


def _events(sidecar: Sidecar, start: str) -> list[dict]:
    return [e for e in sidecar.events() if e.get("event", "").startswith(start)]


def _committed(sidecar: Sidecar, after: int = 0) -> int:
    return len(sidecar.events("committed")) > after


def _spki(ca) -> str:
    return fingerprint.spki_sha256(ca.pem)


def test_a_master_started_under_another_node_name_with_a_fresh_ca_refuses_and_leaves_the_published_ca(fleet):
    ca = make_ca()
    first = fleet.master("master1", fleet.root("master1", ca))
    fleet.wait_published(ca, "master1 publishing its CA")
    published = fleet.store.get(fleet.layout.ca)

    fresh = make_ca("a fresh CA")
    typo = fleet.master("mastr1", fleet.root("mastr1", fresh))
    wait_for(lambda: typo.proc.poll() is not None or fleet.published_key() != _spki(ca), 120,
             what="the second master exiting or publishing", step=0.05, details=fleet.tails)
    assert fleet.store.get(fleet.layout.ca) == published, "the published CA was overwritten"
    assert typo.proc.returncode == 1, fleet.tails()
    [refusal] = [e for e in typo.events() if e.get("level") == "error" and e.get("event") != "statesync: error"]
    assert {refusal["local_ca_spki_sha256"], refusal["reference_ca_spki_sha256"]} == {_spki(fresh), _spki(ca)}
    assert first.proc.poll() is None


def test_a_root_wiped_at_runtime_and_given_a_new_ca_is_committed_but_never_published(fleet):
    ca = make_ca()
    root = fleet.root("master1", ca)
    port = free_ports(1)[0]
    master = fleet.master("master1", root, STATESYNC_HTTP_PORT=str(port))
    fleet.wait_published(ca, "master1 publishing its CA")
    commits = len(master.events("committed"))

    for entry in root.iterdir():
        if not entry.name.startswith(".statesync"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    new = make_ca("copied in")
    (root / "ca").mkdir()
    (root / "ca/ca.crt").write_bytes(new.pem)
    (root / "ca/ca.key").write_text("another key")
    wait_for(lambda: _events(master, "CA conflict") or fleet.published_key() != _spki(ca), 120,
             what="the master refusing (or publishing) the copied-in CA", step=0.02, details=fleet.tails)
    assert fleet.published_key() == _spki(ca)
    assert len(master.events("committed")) > commits  # the node's own history has it
    [alert] = _events(master, "CA conflict")
    assert alert["level"] == "error"
    assert (alert["ca_spki_sha256"], alert["published_spki_sha256"]) == (_spki(new), _spki(ca))
    assert "statesync_ca_conflict 1.0" in http_get(port, "/metrics")[1]
    time.sleep(1.0)
    assert fleet.published_key() == _spki(ca)


def test_two_masters_with_different_cas_do_not_flip_the_published_ca_back_and_forth(fleet):
    a, b = make_ca("A"), make_ca("B")
    root_a = fleet.root("master1", a)
    first = fleet.master("master1", root_a)
    fleet.wait_published(a, "master1 publishing CA A")
    # A second master told to make its CA the truth (the permanent override) publishes CA B ...
    second = fleet.master("master2", fleet.root("master2", b), STATESYNC_ON_CONFLICT="keep-local")
    fleet.wait_published(b, "master2 publishing CA B")
    changes = [fleet.store.get(fleet.layout.ca).modify_index]

    # ... and the first master, at its next look (here: its CA renewed, same key), does not take it back.
    (root_a / "ca/ca.crt").write_bytes(renew(a).pem)
    wait_for(lambda: _events(first, "CA conflict") or fleet.published_key() != _spki(b), 120,
             what="master1 noticing it lost the publication", step=0.02, details=fleet.tails)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        changes.append(fleet.store.get(fleet.layout.ca).modify_index)
        time.sleep(0.1)
    assert fleet.published_key() == _spki(b)
    assert len(set(changes)) == 1, "the published CA changed again"
    [alert] = _events(first, "CA conflict")
    assert "another publisher replaced" in alert["event"] and alert["published_by"] == "master2"
    assert second.proc.poll() is None and first.proc.poll() is None


def test_accept_ca_publishes_the_new_ca_once_records_the_decision_and_keeps_the_old_one_in_the_history(fleet):
    old, new, third = make_ca("old"), make_ca("new"), make_ca("third")
    root = fleet.root("master1", old)
    master = fleet.master("master1", root)
    fleet.wait_published(old, "master1 publishing the old CA")
    (root / "ca/ca.crt").write_bytes(new.pem)
    wait_for(lambda: _events(master, "CA conflict"), 120, what="the conflict alert", step=0.02, details=fleet.tails)
    assert fleet.published_key() == _spki(old)

    proc = fleet.cli("accept-ca", "--yes", "--reason", "planned CA rotation, ticket 42", node="master1", root=root)
    assert proc.returncode == 0, proc.stderr
    assert _spki(old) in proc.stdout and _spki(new) in proc.stdout and "CN=new" in proc.stdout
    doc = fleet.wait_published(new, "the accepted CA published")
    assert (doc.node, fleet.store.get(fleet.layout.ca_accept)) == ("master1", None)  # consumed
    [entry] = json.loads(fleet.store.get(fleet.layout.ca_history).value)
    assert entry["doc"]["spki_sha256"] == _spki(old) and entry["decision"] == "accepted"
    assert entry["acceptance"]["reason"] == "planned CA rotation, ticket 42"
    assert entry["acceptance"]["old_spki_sha256"] == _spki(old)
    [published] = _events(master, "CA key changed as accepted")
    assert published["reason"] == "planned CA rotation, ticket 42"

    check = fleet.cli("check-ca", node="master1", root=root)
    assert "trusted before" in check.stdout and _spki(old) in check.stdout

    # The decision was for one change: a third key is refused again.
    alerts = len(_events(master, "CA conflict"))
    (root / "ca/ca.crt").write_bytes(third.pem)
    wait_for(lambda: len(_events(master, "CA conflict")) > alerts, 120, what="the third key refused", step=0.02,
             details=fleet.tails)
    assert fleet.published_key() == _spki(new)


def test_keep_local_still_publishes_a_new_key_and_logs_an_error_each_time_it_overrides(fleet):
    other = make_ca("published by another master")
    publish(fleet.store, fleet.layout.ca, other, node="master0")
    mine, later = make_ca("mine"), make_ca("later")
    root = fleet.root("master1", mine)
    master = fleet.master("master1", root, STATESYNC_ON_CONFLICT="keep-local")
    fleet.wait_published(mine, "the local CA published by keep-local")
    (root / "ca/ca.crt").write_bytes(later.pem)
    fleet.wait_published(later, "the next local CA published by keep-local")
    overrides = [e for e in master.events() if "on_conflict=keep-local overrides" in e.get("event", "")]
    # one at start-up, one for each publication it forced
    assert [e["level"] for e in overrides] == ["error"] * 3, fleet.tails()
    history = json.loads(fleet.store.get(fleet.layout.ca_history).value)
    assert [h["doc"]["spki_sha256"] for h in history] == [_spki(mine), _spki(other)]


def test_accept_ca_without_yes_off_a_terminal_is_a_one_line_usage_error_and_writes_nothing(fleet):
    root = fleet.root("master1")
    proc = fleet.cli("accept-ca", "--reason", "rotation", node="master1", root=root)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("statesync: error: "), proc.stderr
    assert "--yes" in proc.stderr
    assert fleet.store.get(fleet.layout.ca_accept) is None
    proc = fleet.cli("accept-ca", "--yes", node="master1", root=root)
    assert proc.returncode == 2 and "--reason" in proc.stderr and proc.stderr.count("\n") == 1


def test_a_master_started_with_an_accepted_ca_publishes_it_at_its_first_sync(fleet):
    old, new = make_ca("old"), make_ca("new")
    publish(fleet.store, fleet.layout.ca, old, node="master1")
    root = fleet.root("master1", new)
    refused = fleet.cli("run", "--role", "master", node="master1", root=root, timeout=120)
    assert refused.returncode == 1 and _spki(new) in refused.stderr and _spki(old) in refused.stderr
    assert fleet.cli("accept-ca", "--yes", "--reason", "rebuilt master", node="master1",
                     root=root).returncode == 0
    master = fleet.master("master1", root)
    fleet.wait_published(new, "the accepted CA published")
    assert json.loads((root / ".statesync-ready").read_text())["action"] == "accepted"
    assert master.proc.poll() is None and fleet.store.get(fleet.layout.ca_accept) is None


def _on_a_terminal(fleet: Fleet, root: Path, answer: str) -> tuple[int, str]:
    """``accept-ca`` with its stdin on a pseudo-terminal that answers ``answer``."""
    import pty
    master_fd, slave_fd = pty.openpty()
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=fleet.addr, STATESYNC_PREFIX=fleet.prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE="master1")
    try:
        os.write(master_fd, answer.encode() + b"\n")
        proc = subprocess.run(statesync_cmd("accept-ca", "--reason", "rotation"), env=env, stdin=slave_fd,
                              capture_output=True, text=True, timeout=60)
    finally:
        os.close(slave_fd)
        os.close(master_fd)
    return proc.returncode, proc.stdout


def test_accept_ca_on_a_terminal_asks_and_records_only_a_yes(fleet):
    old = make_ca("old")
    publish(fleet.store, fleet.layout.ca, old, node="master1")
    new = make_ca("new")
    root = fleet.root("master1", new)
    code, out = _on_a_terminal(fleet, root, "n")
    assert code == 1 and "Accept this CA for the whole fleet?" in out and "nothing written" in out
    assert fleet.store.get(fleet.layout.ca_accept) is None
    code, out = _on_a_terminal(fleet, root, "y")
    assert code == 0, out
    record = json.loads(fleet.store.get(fleet.layout.ca_accept).value)
    assert (record["old_spki_sha256"], record["new_spki_sha256"], record["reason"]) == (_spki(old), _spki(new),
                                                                                         "rotation")
    assert record["node"] == "master1" and "@" in record["operator"]
    assert fleet.published_key() == _spki(old)  # published only by the master sidecar


def test_the_example_acl_policies_let_a_master_accept_and_publish_a_ca_and_a_satellite_read_the_history(
        acl_consul, tmp_path):
    from statesync.cli.ca import history_lines
    from statesync.errors import PermissionDenied
    from statesync.guard import accept_ca
    from statesync.guard.publish import CaPublisher
    from statesync.repo.repository import Repo

    from ..acl_support import PREFIX

    def load(policy: str, node: str) -> config.Config:
        token = acl_consul.token(policy, node)
        return config.load({"prefix": PREFIX, "node": node, "consul.addr": [acl_consul.addr],
                            "consul.token": token, "root": str(tmp_path / node)}, env={})
    master, sat = load("master.hcl", "master1"), load("satellite.hcl", "sat1")
    keys = (master.layout.ca, master.layout.ca_accept, master.layout.ca_history)

    def clear():  # the agent, and so the prefix, is shared with tests/integration/test_security_acl.py
        for key in keys:
            acl_consul.api("DELETE", f"/v1/kv/{key}", acl_consul.master)
    clear()
    try:
        store = Store(master.consul)
        repo = Repo(store, master.layout, master.chunk_size, master.keep)
        old, new = make_ca("old"), make_ca("new")
        assert CaPublisher(repo, master.root).publish(cadoc.from_pem(old.pem, "t", "master1", "s1")) == "published"
        (master.root / "ca").mkdir(parents=True)
        (master.root / "ca/ca.crt").write_bytes(new.pem)
        accept_ca.record(master, store, accept_ca.propose(master, store), "rotation")  # accept-ca with the master's token
        assert CaPublisher(repo, master.root).publish(cadoc.from_pem(new.pem, "t", "master1", "s2")) == "accepted"
        assert store.get(master.layout.ca_accept) is None

        sat_store = Store(sat.consul)
        assert _spki(old) in "\n".join(history_lines(sat, sat_store))
        with pytest.raises(PermissionDenied):
            sat_store.put(sat.layout.ca_accept, b"{}")
    finally:
        clear()
