"""`statesync diff`, an honest `restore --dry-run`, and `restore --include PATH --target DIR`,
against a real Consul: a tree with a sealed private key, backed up once, then compared and
restored in part."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from statesync import config
from statesync.repo.repository import Repo
from statesync.sidecar.wiring import open_repo

from ..sidecar import statesync_env
from ..support import clean_env, make_tree, run_statesync, tree_state

pytestmark = pytest.mark.consul

KEY = "certs/node.key"  # a PEM private key: sealed whenever an encryption key is configured


def pem_private_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Node:
    def __init__(self, consul, prefix: str, tmp: Path):
        self.addr, self.prefix, self.tmp = consul.addr, prefix, tmp
        self.root = tmp / "root"
        self.key_file = tmp / "statesync.key"
        proc = run_statesync(["keygen", "--out", str(self.key_file)], clean_env())
        assert proc.returncode == 0, proc.stderr

    def env(self, **extra) -> dict:
        return statesync_env(self.addr, self.prefix, self.root, log_format="console", plaintext=False,
                             encryption_key_file=self.key_file, **extra)

    def run(self, *args, **extra) -> subprocess.CompletedProcess:
        return run_statesync(list(args), self.env(**extra))

    def repo(self) -> Repo:
        cfg = config.load({"prefix": self.prefix, "node": "node1", "consul.addr": [self.addr],
                           "root": str(self.root), "encryption_key_file": str(self.key_file)}, env={})
        return open_repo(cfg)


@pytest.fixture
def node(consul, prefix, tmp_path) -> Node:
    n = Node(consul, prefix, tmp_path)
    make_tree(n.root)
    (n.root / KEY).write_bytes(pem_private_key())
    os.chmod(n.root / KEY, 0o600)
    proc = n.run("backup")
    assert proc.returncode == 0, proc.stderr
    return n


def one_error_line(proc: subprocess.CompletedProcess, after_retries: bool = False) -> str:
    lines = proc.stderr.strip().splitlines()
    if after_retries:  # each retry of an unreachable Consul is a warning of its own first
        lines = [line for line in lines if "retrying" not in line]
    assert len(lines) == 1 and lines[0].startswith("statesync: error: "), proc.stderr
    return lines[0]


def listed(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        label, _, path = line.partition(" ")
        if path.strip() and not line.startswith("dry run"):
            out.setdefault(label, []).append(path.strip())
    return out


# -- statesync diff --------------------------------------------------------------------

def test_the_fixture_snapshot_holds_the_private_key_sealed(node):
    repo = node.repo()
    entries = repo.manifest(repo.head().record).by_path()
    assert entries[KEY].sealed


def test_diff_of_the_tree_just_backed_up_lists_nothing_and_exits_0(node):
    proc = node.run("diff")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_diff_lists_content_added_removed_and_metadata_changes_each_in_its_category_and_exits_1(node):
    (node.root / "binary.bin").write_bytes(b"other content")
    (node.root / "new.txt").write_text("new")
    (node.root / "empty").unlink()
    os.chmod(node.root / "certs/run.sh", 0o700)
    proc = node.run("diff")
    assert proc.returncode == 1, proc.stderr
    assert listed(proc.stdout) == {"added": ["new.txt"], "changed": ["binary.bin"], "removed": ["empty"],
                                   "metadata": ["certs/run.sh"]}


def test_diff_json_names_the_snapshot_and_lists_every_category(node):
    os.utime(node.root / "certs/node.crt", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    proc = node.run("diff", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"snapshot", "root", "identical", "added", "changed", "removed", "metadata", "changes"}
    assert doc["snapshot"] == node.repo().head().record.id
    assert doc["root"] == str(node.root)
    assert doc["identical"] is False
    assert (doc["added"], doc["changed"], doc["removed"], doc["metadata"]) == ([], [], [], ["certs/node.crt"])
    assert doc["changes"] == [{"change": "metadata", "path": "certs/node.crt", "path_bytes_b64": None}]


def test_diff_json_of_an_identical_tree_says_identical_and_exits_0(node):
    proc = node.run("diff", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["identical"] is True and not (doc["added"] or doc["changed"] or doc["removed"] or doc["metadata"])


def test_diff_sees_a_new_content_of_the_sealed_key_as_changed(node):
    (node.root / KEY).write_bytes(pem_private_key())
    os.chmod(node.root / KEY, 0o600)
    proc = node.run("diff")
    assert proc.returncode == 1, proc.stderr
    assert listed(proc.stdout) == {"changed": [KEY]}


def test_diff_compares_with_an_older_snapshot_when_asked(node):
    first = node.repo().head().record.id
    (node.root / "new.txt").write_text("new")
    assert node.run("backup").returncode == 0
    assert node.run("diff").returncode == 0
    proc = node.run("diff", "--snapshot", first)
    assert proc.returncode == 1 and listed(proc.stdout) == {"added": ["new.txt"]}


def test_diff_without_the_encryption_key_is_trouble_exit_2(node):
    env = node.env()
    del env["STATESYNC_ENCRYPTION_KEY_FILE"]
    proc = run_statesync(["diff"], env)
    assert proc.returncode == 2
    assert "encryption key" in one_error_line(proc)


def test_diff_of_a_root_that_does_not_exist_is_trouble_exit_2(node, tmp_path):
    proc = node.run("diff", STATESYNC_ROOT=str(tmp_path / "absent"))
    assert proc.returncode == 2
    assert "not a directory" in one_error_line(proc)
    assert not (tmp_path / "absent").exists()


def test_diff_of_a_snapshot_that_does_not_exist_is_trouble_exit_2(node):
    proc = node.run("diff", "--snapshot", "20200101T000000.000000Z-abcdef")
    assert proc.returncode == 2
    one_error_line(proc)


def test_diff_with_consul_unreachable_is_trouble_exit_2_not_different(node):
    from ..support import free_ports
    proc = node.run("diff", CONSUL_HTTP_ADDR=f"127.0.0.1:{free_ports(1)[0]}")
    assert proc.returncode == 2
    one_error_line(proc, after_retries=True)


# -- restore --dry-run -----------------------------------------------------------------

def test_restore_dry_run_on_the_tree_it_would_restore_lists_nothing_not_even_the_sealed_key_and_exits_0(node):
    before = tree_state(node.root)
    proc = node.run("restore", "--dry-run", "--force")
    assert proc.returncode == 0, proc.stderr
    assert listed(proc.stdout) == {}
    assert "nothing would change" in proc.stdout
    assert tree_state(node.root) == before


def test_restore_dry_run_after_a_change_exits_1_and_counts_each_kind(node):
    (node.root / "binary.bin").write_bytes(b"other content")
    (node.root / "new.txt").write_text("new")
    (node.root / "empty").unlink()
    os.chmod(node.root / "certs/run.sh", 0o700)
    proc = node.run("restore", "--dry-run", "--force")
    assert proc.returncode == 1, proc.stderr
    assert listed(proc.stdout) == {"add": ["empty"], "change": ["binary.bin"], "meta": ["certs/run.sh"],
                                   "remove": ["new.txt"]}
    assert "1 to add, 1 to change, 1 metadata only, 1 to remove" in proc.stdout


def test_restore_dry_run_with_force_counts_what_it_would_move_aside(node):
    (node.root / "binary.bin").write_bytes(b"other content")
    top = sorted(n for n in os.listdir(node.root))
    proc = node.run("restore", "--dry-run", "--force")
    assert proc.returncode == 1, proc.stderr
    assert f"{len(top)} entries of {node.root} to move aside" in proc.stdout
    assert "0 to move aside" not in proc.stdout
    assert not (node.root / ".statesync-aside").exists()


def test_restore_dry_run_on_a_non_empty_root_without_force_says_restore_would_refuse_and_what_force_moves(node):
    (node.root / "new.txt").write_text("new")
    proc = node.run("restore", "--dry-run")
    assert proc.returncode == 1, proc.stderr
    assert "restore refuses it without --force, which would move them aside" in proc.stdout


def test_restore_dry_run_into_an_absent_root_lists_everything_to_add_and_creates_nothing(node, tmp_path):
    other = tmp_path / "absent"
    proc = node.run("restore", "--dry-run", STATESYNC_ROOT=str(other))
    assert proc.returncode == 1, proc.stderr
    assert KEY in listed(proc.stdout)["add"]
    assert "nothing to move aside" in proc.stdout
    assert not other.exists()


def test_restore_dry_run_with_if_empty_on_a_root_holding_state_exits_0_and_writes_no_ready_marker(node):
    proc = node.run("restore", "--dry-run", "--if-empty")
    assert proc.returncode == 0, proc.stderr
    assert "already holds Icinga 2 state" in proc.stdout
    assert not (node.root / ".statesync-ready").exists()


def test_restore_dry_run_with_consul_unreachable_is_trouble_exit_2(node):
    from ..support import free_ports
    proc = node.run("restore", "--dry-run", CONSUL_HTTP_ADDR=f"127.0.0.1:{free_ports(1)[0]}")
    assert proc.returncode == 2
    one_error_line(proc, after_retries=True)


# -- restore --include PATH --target DIR -------------------------------------------------

def test_restore_include_a_file_and_a_directory_into_a_target_gives_identical_bytes_and_modes(node, tmp_path):
    target = tmp_path / "out" / "part"
    live = tree_state(node.root)
    proc = node.run("restore", "--include", "binary.bin", "--include", "certs/", "--target", str(target))
    assert proc.returncode == 0, proc.stderr
    got = tree_state(target)
    want = {p: v for p, v in live.items() if p == "binary.bin" or p == "certs" or p.startswith("certs/")}
    assert got == want
    assert (target / KEY).read_bytes() == (node.root / KEY).read_bytes()
    assert (target / KEY).stat().st_mode & 0o7777 == 0o600
    assert (target / "certs/run.sh").stat().st_mode & 0o7777 == 0o755
    assert sorted(os.listdir(target)) == ["binary.bin", "certs"]  # no lock, staging or journal left
    assert tree_state(node.root) == live


def test_restore_include_of_a_nested_file_brings_its_directories_with_their_recorded_modes(node, tmp_path):
    target = tmp_path / "part"
    proc = node.run("restore", "--include", "api/zones/master/_etc/größe-ünïcødé.conf", "--target", str(target))
    assert proc.returncode == 0, proc.stderr
    assert tree_state(target) == {p: v for p, v in tree_state(node.root).items()
                                  if p in ("api", "api/zones", "api/zones/master", "api/zones/master/_etc",
                                           "api/zones/master/_etc/größe-ünïcødé.conf")}


def test_restore_include_without_target_is_a_usage_error_that_restores_nothing(node, tmp_path):
    empty = tmp_path / "fresh"
    proc = node.run("restore", "--include", "binary.bin", STATESYNC_ROOT=str(empty))
    assert proc.returncode == 2
    assert "--target" in one_error_line(proc)
    assert not empty.exists()


def test_restore_include_that_matches_nothing_exits_1_and_creates_no_target(node, tmp_path):
    target = tmp_path / "part"
    proc = node.run("restore", "--include", "certs", "--include", "no/such/path", "--target", str(target))
    assert proc.returncode == 1
    assert "no/such/path" in one_error_line(proc)
    assert not target.exists()


@pytest.mark.parametrize("path", ["../etc/passwd", "certs/../../x", "/etc/passwd", ".", "certs/./node.key", ""])
def test_restore_include_of_a_path_that_escapes_or_is_not_plain_is_refused(node, tmp_path, path):
    target = tmp_path / "part"
    proc = node.run("restore", "--include", path, "--target", str(target))
    assert proc.returncode == 2
    one_error_line(proc)
    assert not target.exists()


def test_restore_include_into_a_non_empty_target_is_refused_without_force_and_moves_it_aside_with(node, tmp_path):
    target = tmp_path / "part"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    proc = node.run("restore", "--include", "certs/node.crt", "--target", str(target))
    assert proc.returncode == 1
    assert "--force" in one_error_line(proc)
    assert sorted(os.listdir(target)) == ["mine.txt"]
    proc = node.run("restore", "--include", "certs/node.crt", "--target", str(target), "--force")
    assert proc.returncode == 0, proc.stderr
    assert (target / "certs/node.crt").read_text() == "node cert"
    aside = list((target / ".statesync-aside").glob("*/mine.txt"))
    assert [p.read_text() for p in aside] == ["keep me"]


def test_restore_include_with_target_the_live_root_replaces_only_the_included_path(node):
    (node.root / "binary.bin").write_bytes(b"damaged")
    (node.root / "new.txt").write_text("not in the snapshot")
    proc = node.run("restore", "--include", "binary.bin", "--target", str(node.root))
    assert proc.returncode == 1
    assert "--force" in one_error_line(proc)
    proc = node.run("restore", "--include", "binary.bin", "--target", str(node.root), "--force")
    assert proc.returncode == 0, proc.stderr
    assert (node.root / "binary.bin").read_bytes() == bytes(range(256)) * 64
    assert (node.root / "new.txt").read_text() == "not in the snapshot"
    assert [p.read_bytes() for p in (node.root / ".statesync-aside").glob("*/binary.bin")] == [b"damaged"]
    assert node.run("diff").returncode == 1  # new.txt, and the aside directory is statesync's own


def test_restore_target_without_include_is_a_usage_error(node, tmp_path):
    proc = node.run("restore", "--target", str(tmp_path / "part"))
    assert proc.returncode == 2
    assert "--include" in one_error_line(proc)
    assert not (tmp_path / "part").exists()
