"""Names chosen to lie: a newline that forges a line of output, control characters, a backslash,
bytes that are not UTF-8. Against the real Consul agent and the real CLI: ``ls``, ``diff``,
``restore --dry-run`` and ``verify`` print each such name escaped on its own line, and the
``--json`` of ``ls`` and ``diff``, read through jq, names each path so exactly that it goes
back into ``ls PATH`` and ``restore --include PATH --target DIR``."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from statesync import config
from statesync.sidecar.wiring import open_repo

from ..sidecar import statesync_env
from ..support import run_statesync, statesync_cmd

pytestmark = pytest.mark.consul

# Each a regular file at the root of the tree, with its content.
CRAFTED = {
    b"forged\nremoved  ca.key": b"a newline that would forge a diff line",
    b"tab\there": b"a tab",
    b"esc\x1b[2Jclear": b"a terminal escape",
    b"back\\slash": b"a backslash",
    b"latin1-\xe9.conf": b"not UTF-8",
}
# A directory whose name is not UTF-8, holding a file with a newline in its name.
CRAFTED_DIR = b"dir-\xff"
CRAFTED_INNER = b"inner\nfile"
LINK, LINK_TARGET = b"link", b"target-\xfe"
FORGED = b"forged\nremoved  ca.key"


def escaped(raw: bytes) -> str:
    """What ``ls -b`` shows for these names (the expectation written out, not computed by statesync)."""
    out = []
    for b in raw:
        ch = chr(b)
        if ch in "\n\t\\":
            out.append({"\n": "\\n", "\t": "\\t", "\\": "\\\\"}[ch])
        elif b < 0x20 or b >= 0x7f:
            out.append(f"\\{b:03o}")
        else:
            out.append(ch)
    return "".join(out)


def make_crafted(root: Path) -> set[bytes]:
    """The crafted entries below ``root``; returns every path they add, as bytes."""
    broot = os.fsencode(root)
    os.makedirs(broot, exist_ok=True)
    for name, content in CRAFTED.items():
        with open(os.path.join(broot, name), "wb") as fh:
            fh.write(content)
    os.mkdir(os.path.join(broot, CRAFTED_DIR))
    with open(os.path.join(broot, CRAFTED_DIR, CRAFTED_INNER), "wb") as fh:
        fh.write(b"below a directory that is not UTF-8")
    os.symlink(LINK_TARGET, os.path.join(broot, LINK))
    return set(CRAFTED) | {CRAFTED_DIR, CRAFTED_DIR + b"/" + CRAFTED_INNER, LINK}


class Node:
    def __init__(self, consul, prefix: str, tmp: Path):
        self.addr, self.prefix, self.tmp, self.root = consul.addr, prefix, tmp, tmp / "root"

    def env(self, **extra) -> dict:
        return statesync_env(self.addr, self.prefix, self.root, log_format="console", plaintext=False, **extra)

    def run(self, *args, **extra) -> subprocess.CompletedProcess:
        return run_statesync(list(args), self.env(**extra))

    def run_bytes(self, *args: str | bytes, **extra) -> subprocess.CompletedProcess:
        """With arguments that may be bytes (a name that is not UTF-8 given as it is)."""
        return subprocess.run([*statesync_cmd(), *args], env=self.env(**extra), capture_output=True, timeout=120)

    def manifest(self):
        repo = open_repo(config.load({"prefix": self.prefix, "node": "node1", "consul.addr": [self.addr],
                                      "root": str(self.root)}, env={}))
        return repo, repo.manifest(repo.head().record)


@pytest.fixture
def node(consul, prefix, tmp_path) -> Node:
    n = Node(consul, prefix, tmp_path)
    n.root.mkdir()
    (n.root / "plain.txt").write_text("an ordinary file\n")
    return n


@pytest.fixture
def crafted(node) -> Node:
    """A snapshot holding the crafted names."""
    make_crafted(node.root)
    proc = node.run("backup")
    assert proc.returncode == 0, proc.stderr
    return node


def jq(document: str, program: str) -> list[bytes]:
    """Run jq as an operator would; each output line is a base64 text, returned decoded."""
    binary = shutil.which("jq")
    assert binary, "jq is not installed (scripts/setup.sh installs it)"
    proc = subprocess.run([binary, "-r", program], input=document.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [base64.b64decode(line) for line in proc.stdout.decode("ascii").splitlines()]


# The bytes of each path, from what jq reads: path_bytes_b64 where statesync gives it, else the
# path itself (jq's @base64 encodes a string's UTF-8, which is the name when it is exact).
EXACT_BYTES = 'if .path_bytes_b64 then .path_bytes_b64 else (.path | @base64) end'


# -- plain text: one line per path, nothing forged ---------------------------------------

def test_ls_prints_each_crafted_name_escaped_on_a_line_of_its_own(crafted):
    proc = crafted.run("ls")
    assert proc.returncode == 0, proc.stderr
    _, manifest = crafted.manifest()
    lines = proc.stdout.splitlines()
    assert len(lines) == len(manifest.entries)
    shown = {line.partition("+00:00 ")[2] for line in lines}  # what follows the mtime
    for raw in CRAFTED:
        assert escaped(raw) in shown
    assert f"{escaped(CRAFTED_DIR)}/{escaped(CRAFTED_INNER)}" in shown
    assert f"{escaped(LINK)} -> {escaped(LINK_TARGET)}" in shown
    assert "\x1b" not in proc.stdout and not any(line.startswith("removed") for line in lines)


def test_diff_lists_each_crafted_name_as_one_escaped_added_line_and_forges_no_removed_line(node):
    assert node.run("backup").returncode == 0
    added = make_crafted(node.root)
    proc = node.run("diff")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(added)
    assert sorted(lines) == sorted(f"added    {escaped(p)}" for p in added)


def test_restore_dry_run_lists_each_crafted_name_as_one_escaped_add_line(crafted, tmp_path):
    empty = tmp_path / "empty-root"
    proc = crafted.run("restore", "--dry-run", STATESYNC_ROOT=str(empty))
    assert proc.returncode == 1, proc.stderr
    _, manifest = crafted.manifest()
    adds = [line for line in proc.stdout.splitlines() if not line.startswith("dry run")]
    assert len(adds) == len(manifest.entries) and all(line.startswith("add    ") for line in adds)
    assert f"add    {escaped(FORGED)}" in adds
    assert not empty.exists()


def test_verify_names_a_damaged_crafted_path_escaped_on_one_line(crafted):
    repo, manifest = crafted.manifest()
    name = os.fsdecode(FORGED)
    repo.store.delete(repo.layout.chunk(manifest.by_path()[name].chunks[0]))
    proc = crafted.run("verify")
    assert proc.returncode == 1, proc.stderr
    damaged = [line for line in proc.stdout.splitlines() if line.startswith("damaged  ")]
    assert len(damaged) == 1 and f"  {escaped(os.fsencode(name))}: missing chunk" in damaged[0]
    assert len(proc.stdout.splitlines()) == 2  # the damaged line and the summary


# -- JSON: strict, and exact enough to go back in ----------------------------------------

def _strict(value) -> None:
    """Every string of a parsed document is Unicode a strict parser accepts (no lone surrogate)."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, list):
        for v in value:
            _strict(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _strict(k)
            _strict(v)


def test_ls_json_read_through_jq_names_every_path_exactly_enough_for_ls_and_restore_include(crafted, tmp_path):
    proc = crafted.run("ls", "--json")
    assert proc.returncode == 0, proc.stderr
    _strict(json.loads(proc.stdout))
    paths = jq(proc.stdout, f".entries[] | {EXACT_BYTES}")
    assert set(paths) == make_crafted(tmp_path / "expected") | {b"plain.txt"}
    # The symlink's target comes back as exactly: escaped in "target", its bytes beside.
    targets = jq(proc.stdout, '.entries[] | select(.type == "symlink") | .target_bytes_b64')
    assert targets == [LINK_TARGET]
    for path in paths:
        one = crafted.run_bytes("ls", "--json", path)
        assert one.returncode == 0, one.stderr
        listed = jq(one.stdout.decode(), f".entries[] | {EXACT_BYTES}")
        assert listed[0] == path and all(p == path or p.startswith(path + b"/") for p in listed)
    target = tmp_path / "part"
    wanted = [b"latin1-\xe9.conf", CRAFTED_DIR, FORGED]
    assert all(w in paths for w in wanted)
    args = [a for w in wanted for a in ("--include", w)]
    part = crafted.run_bytes("restore", *args, "--target", str(target))
    assert part.returncode == 0, part.stderr
    base = os.fsencode(target)
    for name in (b"latin1-\xe9.conf", FORGED):
        with open(os.path.join(base, name), "rb") as fh:
            assert fh.read() == CRAFTED[name]
    with open(os.path.join(base, CRAFTED_DIR, CRAFTED_INNER), "rb") as fh:
        assert fh.read() == b"below a directory that is not UTF-8"
    assert len(part.stdout.decode().splitlines()) == 1


def test_diff_json_read_through_jq_gives_the_bytes_of_each_crafted_path(node):
    assert node.run("backup").returncode == 0
    added = make_crafted(node.root)
    proc = node.run("diff", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    _strict(doc)
    assert sorted(jq(proc.stdout, f'.changes[] | select(.change == "added") | {EXACT_BYTES}')) == sorted(added)
    assert len(doc["added"]) == len(added) and not (doc["changed"] or doc["removed"] or doc["metadata"])


def test_an_error_naming_a_path_with_a_newline_is_still_one_line(node, tmp_path):
    root = tmp_path / "no\nstatesync: error: forged"
    proc = node.run("diff", STATESYNC_ROOT=str(root))
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert line.endswith("no\\nstatesync: error: forged is not a directory")
    proc = node.run("diff", STATESYNC_ROOT=str(root), STATESYNC_LOG_FORMAT="json")
    (line,) = proc.stderr.splitlines()
    assert json.loads(line)["error"] == f"root: {root} is not a directory"
