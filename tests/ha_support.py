"""Helpers of the high-availability tests (and of bench/soak.py): random file churn, and the
checks that a node's history is whole and its head equals a tree (the sidecar: tests/sidecar.py)."""
from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo
from statesync.restore.apply import restore
from statesync.snapshot import chunking
from statesync.snapshot import manifest as mf
from statesync.snapshot.record import Record
from statesync.tree.scan import Scanner

from .support import tree_state


def load_cfg(addrs: list[str], prefix: str, root: Path, node: str = "node1", **settings) -> config.Config:
    """The Config a sidecar with these settings would use (for its path filter and layout)."""
    flags = {"prefix": prefix, "node": node, "consul.addr": list(addrs), "root": str(root)}
    flags.update({k.replace("__", "."): v for k, v in settings.items()})
    return config.load(flags, env={})


def node_repo(addrs: list[str], prefix: str, node: str = "node1") -> Repo:
    cfg = load_cfg(addrs, prefix, Path("/nonexistent"), node)
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)


def make_state_tree(root: Path, files: int, rng: random.Random, dirs: int = 10, size: tuple[int, int] = (200, 6000)) -> None:
    """An Icinga 2-like tree: ca/ and certs/ (so a starting sidecar mirrors it instead of
    restoring over it) and ``files`` files spread over ``dirs`` directories."""
    (root / "ca").mkdir(parents=True, exist_ok=True)
    (root / "certs").mkdir(exist_ok=True)
    (root / "certs/node.crt").write_text("node certificate")
    for i in range(files):
        d = root / "api" / f"d{i % dirs:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.conf").write_bytes(rng.randbytes(rng.randint(*size)))


class Churn:
    """Random changes under ``root/api`` on a thread: overwrite, create, delete and rename
    files, ``rate`` operations a second, until ``stop()``."""

    def __init__(self, root: Path, seed: int, rate: float = 20.0, size: tuple[int, int] = (100, 6000)):
        self.root = root
        self.rng = random.Random(seed)
        self.interval = 1.0 / rate
        self.size = size
        self.ops = 0
        self.last_change = 0.0
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._busy = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="churn", daemon=True)

    def start(self) -> "Churn":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the changes (idempotent); returns once the thread has ended."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
            assert not self._thread.is_alive(), "churn thread did not stop"

    def pause(self, paused: bool) -> None:
        """Hold (True) or resume (False) the changes; returns once no change is in flight."""
        if paused:
            self._paused.set()
            # A change in flight holds the lock: once we get it, none is, however slow the machine.
            with self._busy:
                pass
        else:
            self._paused.clear()

    def _files(self) -> list[Path]:
        return sorted((self.root / "api").rglob("*.conf"))

    def _run(self) -> None:
        files = self._files()
        while not self._stop.wait(self.interval):
            with self._busy:
                if self._paused.is_set():
                    continue
                self.step(files)
                self.ops += 1
                self.last_change = time.monotonic()

    def step(self, files: list[Path]) -> None:
        """One random change; ``files`` (the current file list) is updated in place."""
        rng = self.rng
        roll = rng.random()
        data = rng.randbytes(rng.randint(*self.size))
        if roll < 0.6 and files:
            rng.choice(files).write_bytes(data)
        elif roll < 0.8 or len(files) < 10:
            d = self.root / "api" / f"d{rng.randrange(10):02d}"
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"n{rng.randrange(10**6):06d}.conf"
            path.write_bytes(data)
            if path not in files:
                files.append(path)
        elif roll < 0.9:
            path = files.pop(rng.randrange(len(files)))
            path.unlink(missing_ok=True)
        else:
            src = files.pop(rng.randrange(len(files)))
            dst = src.with_name(f"r{rng.randrange(10**6):06d}.conf")
            if src.exists():
                os.replace(src, dst)
                files.append(dst)


def tree_manifest(cfg: config.Config) -> mf.Manifest:
    """The manifest a fresh scan of ``cfg.root`` gives, filtered as the sidecar filters it."""
    return Scanner(cfg.root, cfg.path_filter, cfg.chunk_size).scan(set()).manifest


def head_equals_tree(repo: Repo, cfg: config.Config) -> Record | None:
    """The head record when its manifest is exactly that of the tree now, else None."""
    record = repo.head().record
    if record is None:
        return None
    return record if chunking.sha256(mf.encode(tree_manifest(cfg))) == record.manifest_sha256 else None


def check_history(repo: Repo, scratch: Path, restore_all: bool = True) -> list[Record]:
    """Assert that the node's kept snapshots form one chain ending at the head and (with
    ``restore_all``) that every one of them restores with all its files; return them, oldest first.

    Records are taken in parent order, not by id: ids come from two clocks when two
    sidecars take turns, and only the parent links say which commit followed which.
    """
    records = {r.id: r for r in repo.records()}
    head = repo.head().record
    assert head is not None and head.id in records, "the head must be a kept snapshot"
    chain = [head]
    while chain[-1].parent in records:
        chain.append(records[chain[-1].parent])
    chain.reverse()
    assert len(chain) == len(records), (
        f"{len(records) - len(chain)} kept snapshot(s) are not on the head's parent chain: interleaved writers")
    if restore_all:
        for record in chain:
            target = scratch / f"restore-{record.id}"
            restore(repo, record, target)
            assert sum(1 for p in target.rglob("*") if p.is_file() and ".statesync-" not in str(p)) == record.files
            shutil.rmtree(target)
    return chain


def assert_restores_to_tree(repo: Repo, record: Record, root: Path, scratch: Path) -> None:
    """Restore ``record`` and compare every path, mode, mtime and byte with ``root``."""
    target = scratch / f"final-{record.id}"
    restore(repo, record, target)
    try:
        assert tree_state(target) == tree_state(root)
    finally:
        shutil.rmtree(target, ignore_errors=True)
