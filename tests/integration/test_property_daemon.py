"""Property: whatever a real sidecar commits, its head restores to exactly that tree.

Hypothesis drives random sequences of create, rewrite, revert (to content the file held
before, whose chunks retention and GC may have collected), delete, rename and GC against a
real `statesync run` and a real Consul, with keep = 2 and GC running every second without
grace. After every step the test waits until the head holds the tree on disk, restores
the head into an empty directory and compares the two byte for byte.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statesync.restore.apply import restore
from statesync.snapshot.chunking import DEFAULT_CHUNK_SIZE

from ..ha_support import node_repo
from ..sidecar import Sidecar
from ..support import wait_for

pytestmark = [pytest.mark.consul, pytest.mark.slow]

NAMES = st.sampled_from(["a", "b", "c", "d/e", "d/f"])
# Sizes around the default chunk size so that files have one, two or three chunks.
CONTENT = st.tuples(st.integers(0, 2**32), st.sampled_from(
    [0, 10, 4096, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 40_000, 2 * DEFAULT_CHUNK_SIZE + 80_000]))
OPS = st.one_of(
    st.tuples(st.just("write"), NAMES, CONTENT),
    st.tuples(st.just("revert"), NAMES, st.integers(0, 5)),
    st.tuples(st.just("delete"), NAMES, st.none()),
    st.tuples(st.just("rename"), NAMES, NAMES),
    st.tuples(st.just("gc"), st.none(), st.none()),
)


def _bytes(seed: int, size: int) -> bytes:
    out, block = bytearray(), hashlib.sha256(seed.to_bytes(8, "big")).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def _files(root: Path) -> dict[str, str]:
    """Every regular file below ``root`` (our own .statesync-* names aside) by path: its sha256."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.split("/")[0].startswith(".statesync-"):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _head_files(repo) -> dict[str, str] | None:
    rec = repo.head().record
    if rec is None:
        return None
    return {e.path: e.sha256 for e in repo.manifest(rec).entries if e.type == "f"}


def _unreferenced(repo) -> set[str]:
    """The stored chunks that no kept snapshot (nor the head) refers to: what GC is there to delete."""
    records = repo.records()
    head = repo.head().record
    referenced = set().union(*(repo.refs(r) for r in [*records, *([head] if head else [])]))
    layout = repo.layout
    return {d for k in repo.store.keys(layout.chunks) if (d := layout.digest_of_chunk_key(k))} - referenced


def _collected(repo) -> None:
    """Return once the sidecar's garbage collector (every second, without grace: a first pass marks, a
    second deletes) has deleted every unreferenced chunk: waited for, not slept for, since a loaded
    machine may run it late."""
    wait_for(lambda: not _unreferenced(repo), 120, what="the unreferenced chunks collected", step=0.1)


def test_the_head_always_restores_to_the_tree_the_sidecar_committed(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "anchor").write_text("keeps the tree from ever looking wiped")
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, keep=2, gc_interval=1, gc_grace=0, debounce=0.05, max_wait=0.5, max_drop=1.0)
    repo = node_repo([consul.addr], prefix)
    examples = itertools.count()

    @settings(max_examples=20, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(OPS, min_size=1, max_size=8))
    # The sequence that lost data before: content collected by retention and GC comes back.
    @example(ops=[("write", "a", (1, 300_000)), ("write", "a", (2, 300_000)), ("write", "a", (3, 300_000)),
                  ("write", "b", (4, 10)), ("gc", None, None), ("write", "b", (5, 10)), ("gc", None, None),
                  ("write", "b", (6, 10)), ("revert", "a", 0)])
    def run(ops):
        base = root / f"ex{next(examples)}"
        history: dict[str, list[bytes]] = {}
        for verb, a, b in ops:
            path = base / (a or "")
            if verb == "write":
                data = _bytes(*b)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                history.setdefault(a, []).append(data)
            elif verb == "revert" and history.get(a):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(history[a][b % len(history[a])])
            elif verb == "delete" and path.exists():
                path.unlink()
            elif verb == "rename" and path.exists() and a != b:
                (base / b).parent.mkdir(parents=True, exist_ok=True)
                os.rename(path, base / b)
                history.setdefault(b, []).extend(history.get(a, []))
            elif verb == "gc":
                _collected(repo)
            expected = _files(root)
            wait_for(lambda: _head_files(repo) == expected, 120, f"the head to hold the tree after {verb}",
                     details=sidecar.output)
            target = tmp_path / "restored"
            shutil.rmtree(target, ignore_errors=True)
            restore(repo, repo.head().record, target)
            assert _files(target) == expected, f"the head does not restore to the committed tree after {verb}"

    try:
        run()
    finally:
        assert sidecar.stop() == 0, sidecar.output()
    assert "Traceback" not in sidecar.output()
