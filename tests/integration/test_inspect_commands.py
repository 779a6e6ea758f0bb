"""The operator's toolkit against the real Consul agent: verify, ls, nodes, --json and JSON errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from statesync import config
from statesync.pki.fingerprint import spki_sha256
from statesync.sidecar.wiring import open_repo
from statesync.snapshot.crypto import format_key, generate_key

from ..sidecar import statesync_env
from ..support import REPO, make_tree, run_statesync
from .test_restore_safety import make_ca_pem

pytestmark = pytest.mark.consul


class Node:
    def __init__(self, consul, prefix: str, root: Path, name: str = "master1", key: Path | None = None):
        self.consul, self.prefix, self.root, self.name = consul, prefix, root, name
        self.key = key or _key_file(root.parent / f"{name}.key")

    def env(self, **extra) -> dict:
        return statesync_env(self.consul.addr, self.prefix, self.root, self.name, log_format="console", plaintext=False,
                             encryption_key_file=self.key, **extra)

    def run(self, *args, check=False, **extra):
        return run_statesync(args, self.env(**extra), check)

    def repo(self):
        return open_repo(config.load({"prefix": self.prefix, "node": self.name, "consul.addr": [self.consul.addr],
                                      "root": str(self.root), "encryption_key_file": str(self.key)}, env={}))

    def chunk_of(self, path: str, snapshot: str | None = None) -> str:
        repo = self.repo()
        return repo.manifest(repo.record(snapshot)).by_path()[path].chunks[0]


def _key_file(path: Path) -> Path:
    path.write_text(format_key(generate_key()) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def node(consul, prefix, tmp_path):
    n = Node(consul, prefix, tmp_path / "root")
    make_tree(n.root)
    n.run("backup", check=True)
    return n


def _error_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("statesync: error: "), proc.stderr
    return lines[0]


def _kv(node: Node) -> list[tuple[str, int]]:
    return sorted((p.key, p.modify_index) for p in node.repo().store.get_prefix(node.prefix + "/"))


def test_verify_finds_a_whole_snapshot_whole_and_writes_nothing(node):
    before = _kv(node)
    proc = node.run("verify")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"whole: {node.repo().record().id} of node master1: ")
    assert _kv(node) == before


def test_verify_lists_the_path_whose_chunk_was_deleted_and_exits_1(node):
    node.repo().store.delete(node.repo().layout.chunk(node.chunk_of("big.dat")))
    proc = node.run("verify")
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"^damaged  \S+  big\.dat: missing chunk", proc.stdout, re.M), proc.stdout
    assert "certs/node.crt" not in proc.stdout


def test_verify_tells_a_corrupted_chunk_from_one_that_does_not_decompress(node):
    store, layout = node.repo().store, node.repo().layout
    store.put(layout.chunk(node.chunk_of("certs/node.crt")), b"not the node certificate")
    store.put(layout.chunk(node.chunk_of("binary.bin")), b"\x02" + b"not a zstd frame" * 4)
    proc = node.run("verify")
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"  certs/node\.crt: checksum mismatch", proc.stdout), proc.stdout
    assert re.search(r"  binary\.bin: cannot decompress", proc.stdout), proc.stdout
    assert "damaged: " in proc.stdout.splitlines()[-1] and "2 damaged path(s)" in proc.stdout


def test_verify_with_another_encryption_key_cannot_decrypt_the_sealed_file(node, tmp_path):
    other = _key_file(tmp_path / "other.key")
    proc = node.run("verify", STATESYNC_ENCRYPTION_KEY_FILE=str(other))
    assert proc.returncode == 1, proc.stderr
    damaged = [line for line in proc.stdout.splitlines() if line.startswith("damaged  ")]
    assert len(damaged) == 1 and "  ca/ca.key: cannot decrypt: sealed with key id " in damaged[0], proc.stdout


def test_verify_all_checks_every_kept_snapshot_and_the_default_only_the_head(node):
    old = node.repo().record().id
    (node.root / "certs/node.crt").write_text("renewed node cert")
    node.run("backup", check=True)
    head = node.repo().record().id
    whole = json.loads(node.run("verify", "--all", "--json", check=True).stdout)
    assert whole["snapshots"] == [old, head] and whole["whole"] is True and whole["damaged"] == []

    node.repo().store.delete(node.repo().layout.chunk(node.chunk_of("certs/node.crt", old)))
    assert node.run("verify").returncode == 0
    proc = node.run("verify", "--all", "--json")
    assert proc.returncode == 1, proc.stderr
    damaged = json.loads(proc.stdout)["damaged"]
    assert [(d["snapshot"], d["path"], d["reason"]) for d in damaged] == [(old, "certs/node.crt", "missing chunk")]
    assert node.run("verify", "--snapshot", old).returncode == 1


def test_ls_shows_type_mode_owner_size_and_mtime_of_each_path(node):
    proc = node.run("ls")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]: line
             for line in proc.stdout.splitlines()}
    assert lines["ca/ca.key"].startswith("-rw------- ")
    assert lines["certs/run.sh"].startswith("-rwxr-xr-x ")
    assert lines["certs"].startswith("d")
    assert lines["certs/ca-link.crt"].startswith("lrwxrwxrwx ") and lines["certs/ca-link.crt"].endswith(
        "certs/ca-link.crt -> ../ca/ca.crt")
    assert f" {3 * 1024 * 1024} " in lines["big.dat"]
    assert " 2020-09-13T12:26:40+00:00 certs/node.crt" in lines["certs/node.crt"]


def test_ls_with_a_path_shows_only_that_file_or_subtree(node):
    paths = [line.split()[-1] for line in node.run("ls", "certs/", check=True).stdout.splitlines()
             if " -> " not in line]
    assert paths == ["certs", "certs/node.crt", "certs/run.sh"]
    rows = json.loads(node.run("ls", "--json", "big.dat", check=True).stdout)["entries"]
    assert [(r["path"], r["type"], r["size"], r["mode"]) for r in rows] == [
        ("big.dat", "file", 3 * 1024 * 1024, "-" + rows[0]["mode"][1:])]


def test_ls_of_a_path_not_in_the_snapshot_is_one_line_and_exit_1(node):
    proc = node.run("ls", "etc/nope")
    assert proc.returncode == 1
    assert "etc/nope: not in snapshot" in _error_line(proc)


def test_nodes_lists_each_node_with_its_heads_ca_and_a_node_with_records_only(consul, prefix, tmp_path):
    master = Node(consul, prefix, tmp_path / "m", "master1")
    pem, key = make_ca_pem()
    (master.root / "ca").mkdir(parents=True)
    (master.root / "ca/ca.crt").write_bytes(pem)
    (master.root / "ca/ca.key").write_bytes(key)
    master.run("backup", check=True)
    sat = Node(consul, prefix, tmp_path / "s", "sat1")
    make_tree(sat.root)
    sat.run("backup", check=True)
    rows = {r["node"]: r for r in json.loads(master.run("nodes", "--json", check=True).stdout)}
    assert set(rows) == {"master1", "sat1"}
    assert rows["master1"]["ca_spki_sha256"] == spki_sha256(pem) and rows["sat1"]["ca_spki_sha256"] is None
    assert rows["sat1"]["head"] == sat.repo().record().id and rows["sat1"]["files"] == sat.repo().record().files

    sat.repo().store.delete(sat.repo().layout.head)
    text = master.run("nodes", check=True).stdout
    assert re.search(r"^sat1 .* 1  no head key", text, re.M), text
    assert re.search(rf"^master1 .*{spki_sha256(pem)}$", text, re.M), text


def test_nodes_under_an_empty_prefix_says_so_and_exits_0(consul, prefix, tmp_path):
    proc = Node(consul, prefix, tmp_path / "root").run("nodes")
    assert proc.returncode == 0 and proc.stdout == f"no node has snapshots under {prefix}\n"


def _documented() -> dict[str, set[str]]:
    """Each command's keys as docs/JSON.md lists them: the first column of its section's table."""
    sections: dict[str, set[str]] = {}
    current = None
    for line in (REPO / "docs/JSON.md").read_text().splitlines():
        if m := re.match(r"^## `statesync ([a-z-]+) ", line):
            current = sections.setdefault(m.group(1), set())
        elif current is not None and (m := re.match(r"^\| `([^`]+)` \|", line)):
            current.add(m.group(1))
    return sections


def _keys(doc, at: str = "") -> set[str]:
    if isinstance(doc, list):
        return set().union(*(_keys(item, at + "[]") for item in doc)) if doc else set()
    if isinstance(doc, dict) and not at.endswith("history[]"):
        out = set()
        for k, v in doc.items():
            name = f"{at}.{k}" if at else k
            out |= {name} | _keys(v, name)
        return out
    if isinstance(doc, dict):
        return {f"{at}.{k}" for k in doc}
    return set()


def test_the_json_of_each_command_has_the_keys_docs_json_md_lists(node, tmp_path):
    docs = _documented()
    node.repo().store.delete(node.repo().layout.chunk(node.chunk_of("big.dat")))
    (node.root / "new.txt").write_text("a change for diff to list")
    outputs = {"snapshots": node.run("snapshots", "--json", check=True), "nodes": node.run("nodes", "--json"),
               "ls": node.run("ls", "--json"), "verify": node.run("verify", "--json"),
               "check-ca": node.run("check-ca", "--json"), "diff": node.run("diff", "--json")}
    for command, proc in outputs.items():
        doc = json.loads(proc.stdout)
        flat = _keys(doc)
        documented = docs[command]
        assert flat == {k for k in documented if not k.startswith("history[]")} | (
            {k for k in flat if k.startswith("history[]")}), (command, flat ^ documented)
    assert outputs["verify"].returncode == 1 and outputs["check-ca"].returncode == json.loads(
        outputs["check-ca"].stdout)["exit_code"]


def test_a_fatal_error_is_one_json_line_when_logs_are_json_and_plain_text_otherwise(node):
    proc = node.run("ls", "etc/nope", STATESYNC_LOG_FORMAT="json")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs[-1]["level"] == "error" and docs[-1]["event"] == "statesync: error"
    assert docs[-1]["exit_code"] == 1 and "etc/nope: not in snapshot" in docs[-1]["error"]
    assert not any(line.startswith("statesync:") for line in lines)
    plain = node.run("ls", "etc/nope")
    assert plain.returncode == 1 and "etc/nope: not in snapshot" in _error_line(plain)
