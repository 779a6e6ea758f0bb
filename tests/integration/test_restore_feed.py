"""The restore's chunk feed fetches ahead in threads: what it fetches, when, and that no fetch
outlives the restore it was for (issue 26, item 5)."""
from __future__ import annotations

import os
import subprocess
import threading

import pytest

from statesync.disk import STAGING_PREFIX
from statesync.errors import CorruptData
from statesync.restore.apply import restore, user_entries
from statesync.restore.feed import PREFETCH, ChunkFeed
from statesync.snapshot.manifest import FILE, tree_order

from ..sidecar import statesync_env
from ..support import statesync_cmd

pytestmark = pytest.mark.consul


def _backup(consul, prefix, root) -> None:
    subprocess.run(statesync_cmd("backup"), env=statesync_env(f"http://{consul.addr}", prefix, root, plaintext=False),
                   check=True, capture_output=True, timeout=120)


def _fetchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("statesync-fetch")]


def test_the_feed_fetches_the_next_batches_before_the_tree_writer_asks_for_them_and_no_more(
        consul, prefix, tmp_path, make_cfg, repo_for):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(6):
        (root / f"f{i}").write_bytes(os.urandom(3000))
    _backup(consul, prefix, root)
    repo = repo_for(make_cfg(root=str(root)))
    record = repo.record()
    manifest = repo.manifest(record)
    fetched: list[set[str]] = []
    ahead = threading.Event()
    fetch = repo.fetch_chunks

    def counting(digests, *args, **kw):
        got = fetch(digests, *args, **kw)
        fetched.append(set(digests))
        if len(fetched) == 1 + PREFETCH:
            ahead.set()
        return got
    repo.fetch_chunks = counting
    files = [e for e in sorted(manifest.entries, key=lambda e: tree_order(e.path)) if e.type == FILE]
    with ChunkFeed(repo, record, manifest, batch_bytes=3000) as feed:  # a batch per file
        assert b"".join(feed.file_chunks(files[0])) == (root / files[0].path).read_bytes()
        assert ahead.wait(60), "the batches after the first were not fetched before they were asked for"
        # the first file's batch and the next PREFETCH files', no further; the fetching threads may
        # finish in any order
        assert sorted(map(sorted, fetched)) == sorted(sorted(e.chunks) for e in files[:1 + PREFETCH])
        for e in files[1:]:
            assert b"".join(feed.file_chunks(e)) == (root / e.path).read_bytes()
    assert [len(b) for b in fetched] == [1] * len(files)  # each chunk once
    assert not _fetchers()


def test_a_damaged_chunk_in_a_batch_fetched_ahead_fails_the_restore_leaving_the_root_and_no_fetching_thread(
        consul, prefix, tmp_path, make_cfg, repo_for):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(8):  # incompressible 1.5 MiB files: several batches of about 4 MiB
        (root / f"f{i}").write_bytes(os.urandom(3 << 19))
    _backup(consul, prefix, root)
    repo = repo_for(make_cfg(root=str(root)))
    record = repo.record()
    last = max((e for e in repo.manifest(record).entries if e.type == FILE), key=lambda e: tree_order(e.path))
    repo.store.put(make_cfg().layout.chunk(last.chunks[-1]), b"bit rot")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("the user's file\n")
    with pytest.raises(CorruptData):
        restore(repo, record, target, force=True)
    assert user_entries(target) == ["keep"]
    assert not [n for n in os.listdir(target) if n.startswith(STAGING_PREFIX)]
    assert (target / "keep").read_text() == "the user's file\n"
    assert not _fetchers()


def test_a_file_asked_for_out_of_order_is_fetched_alone_and_the_batches_ahead_still_serve_the_rest(
        consul, prefix, tmp_path, make_cfg, repo_for):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}").write_bytes(os.urandom(2000))
    _backup(consul, prefix, root)
    repo = repo_for(make_cfg(root=str(root)))
    record = repo.record()
    manifest = repo.manifest(record)
    files = [e for e in sorted(manifest.entries, key=lambda e: tree_order(e.path)) if e.type == FILE]
    with ChunkFeed(repo, record, manifest, batch_bytes=2000) as feed:
        assert b"".join(feed.file_chunks(files[0])) == (root / files[0].path).read_bytes()
        assert b"".join(feed.file_chunks(files[3])) == (root / files[3].path).read_bytes()
        assert b"".join(feed.file_chunks(files[1])) == (root / files[1].path).read_bytes()  # before: alone
        for e in files[4:]:
            assert b"".join(feed.file_chunks(e)) == (root / e.path).read_bytes()
    assert not _fetchers()
