"""The daemon runs `statesync backup`'s pipeline (repo/backup): its scans stream the chunks up
while they read and keep none of their bytes, the first full scan always, later syncs unless
min_interval paces a path (the pacer keeps the chunks of a version it holds back, which a chunk
kept only as its size cannot give); those keep what they read in memory for the commit."""
from __future__ import annotations

import os
import threading

import pytest

from statesync.sidecar.daemon import Daemon
from statesync.snapshot.manifest import FILE
from statesync.tree import scan as scan_module

from ..support import wait_for

pytestmark = pytest.mark.consul


def _syncs(cfg, daemon: Daemon, big: bytes, later_big: bytes) -> list[tuple[bool, bool, int, int]]:
    """Run the daemon over ``big``, then rewrite it as ``later_big``; each scan as (full, given a
    sink, chunks kept as bytes, chunks written by the sink and no longer kept). Checks that the
    head holds ``later_big``."""
    (cfg.root / "big").write_bytes(big)
    scans: list[tuple[bool, bool, int, int]] = []
    real_scan = daemon.scanner.scan

    def scan(known, dirty=None, **kwargs):
        handed: list[str] = []
        streaming = kwargs.get("sink") is not None
        if streaming:
            sink = kwargs["sink"]
            kwargs["sink"] = lambda d, data: (handed.append(d), sink(d, data))
        result = real_scan(known, dirty, **kwargs)
        written = sum(1 for d in handed if d not in result.new_chunks)
        scans.append((dirty is None, streaming, len(result.new_chunks), written))
        return result

    daemon.scanner.scan = scan
    thread = threading.Thread(target=daemon.run, name="daemon-loop", daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.state.commits >= 1, 120, what="the first commit")
        (cfg.root / "big").write_bytes(later_big)
        wait_for(lambda: daemon.state.commits >= 2, 120, what="the commit of a change")
    finally:
        daemon.stop()
        thread.join(60)
    assert not thread.is_alive()
    repo = daemon.repo
    record = repo.record()
    manifest = repo.manifest(record)
    contents = repo.contents(record, manifest)
    files = {e.path: repo.file_bytes(e, contents) for e in manifest.entries if e.type == FILE}
    assert files == {"big": later_big}
    return scans


def test_without_min_interval_every_scan_streams_its_chunks_up_while_it_reads(make_cfg, repo_for):
    # Before issue 26 only the first full scan streamed: a rewritten Icinga 2 state file was read
    # whole into memory and uploaded after the scan, not while it went on.
    cfg = make_cfg(debounce=0.05, lock__enabled="false")
    cfg.root.mkdir(parents=True)
    size = 16 * cfg.chunk_size  # many chunks: many requests in flight while the scan goes on
    scans = _syncs(cfg, Daemon(cfg, repo_for(cfg)), os.urandom(size), os.urandom(size))
    full, streamed, _, written = scans[0]
    assert full and streamed and written >= 8, scans
    later = [s for s in scans[1:] if not s[0] and s[2] + s[3]]
    assert later and all(streamed and written >= 8 for _, streamed, _, written in later), scans


def test_with_min_interval_later_syncs_keep_their_chunks_in_memory_for_the_pacer(make_cfg, repo_for):
    cfg = make_cfg(debounce=0.05, lock__enabled="false", min_interval="paced.state=1h")
    cfg.root.mkdir(parents=True)
    size = 16 * cfg.chunk_size
    scans = _syncs(cfg, Daemon(cfg, repo_for(cfg)), os.urandom(size), os.urandom(size))
    full, streamed, _, written = scans[0]
    assert full and streamed and written >= 8, scans
    later = [s for s in scans[1:] if not s[0]]
    assert later and all(not streamed and not written for _, streamed, _, written in later), scans


def test_a_first_scan_that_streamed_and_found_a_named_root_missing_reads_the_tree_again_without_a_failed_cycle(
        make_cfg, repo_for, monkeypatch):
    """The chunks it streamed are in Consul but in no snapshot, and named only by the stream's record of what it sent: the
    next attempt must not count on them (that attempt failed for missing chunks and reloaded).
    The file counts as settled at once, so the next scan would not read it again by itself."""
    monkeypatch.setattr(scan_module, "RACY_NS", 0)
    cfg = make_cfg(debounce=0.05, lock__enabled="false", roots="state=state,config=config")
    (cfg.root / "state").mkdir(parents=True)
    big = os.urandom(4 * 1024 * 1024)
    (cfg.root / "state" / "big").write_bytes(big)
    daemon = Daemon(cfg, repo_for(cfg))
    thread = threading.Thread(target=daemon.run, name="daemon-loop", daemon=True)
    thread.start()
    try:
        wait_for(lambda: "config (config) does not exist" in daemon.state.last_error, 120,
                 what="the daemon waiting for the named root config")
        (cfg.root / "config").mkdir()
        wait_for(lambda: daemon.state.commits >= 1, 120, what="the first commit", details=lambda: daemon.state.last_error)
    finally:
        daemon.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert daemon.state.failures == 0, daemon.state.last_error
    repo = daemon.repo
    record = repo.record()
    manifest = repo.manifest(record)
    contents = repo.contents(record, manifest)
    assert [repo.file_bytes(e, contents) for e in manifest.entries if e.type == FILE] == [big]
