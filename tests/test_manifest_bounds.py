"""A forged manifest fails `statesync restore` with one line, or restores within 256 MB.

Whoever holds a node's write token can put any manifest in Consul. Each case here does just
that: it writes the manifest's pieces, a snapshot record and the head straight into KV over
HTTP, as such a writer would, then runs the real `statesync restore` under an address-space
limit (so that a regression fails instead of taking the machine's memory) and measures its
peak resident set with wait4.
"""
from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import urllib.request
import zlib

import pytest

from statesync.errors import EXIT_FAILURE
from statesync.snapshot import chunking
from statesync.snapshot import manifest as mf
from statesync.snapshot.layout import Layout
from statesync.snapshot.record import Record, new_id

from .support import clean_env, statesync_cmd

LIMIT_MB = 256
# Far above what any restore needs, far below what the machine has: a manifest that still
# exhausts memory ends in MemoryError here rather than in the kernel's OOM killer.
ADDRESS_SPACE = 1536 << 20
NODE = "node1"


def _kv(consul, ops: list[dict]) -> None:
    """One Consul transaction of KV sets, as any holder of the node's write token can send."""
    body = json.dumps([{"KV": {"Verb": "set", "Key": op["key"], "Value": base64.b64encode(op["value"]).decode()}}
                       for op in ops]).encode()
    req = urllib.request.Request(f"http://{consul.addr}/v1/txn", data=body, method="PUT")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.status == 200


def plant(consul, prefix: str, pieces: list[bytes], chunks: dict[str, bytes] | None = None,
          chunk_size: int = chunking.DEFAULT_CHUNK_SIZE) -> Record:
    """Store a snapshot whose manifest is ``pieces`` (and file chunks ``chunks``) as the node's head."""
    layout = Layout(prefix, NODE)
    values = {chunking.sha256(p): p for p in pieces}
    values.update(chunks or {})
    batch: list[dict] = []
    for d, v in values.items():
        if len(v) > 300_000:  # alone: a transaction carries at most 512 KiB of base64
            req = urllib.request.Request(f"http://{consul.addr}/v1/kv/{layout.chunk(d)}", data=v, method="PUT")
            with urllib.request.urlopen(req, timeout=60) as r:
                assert r.status == 200
            continue
        # Consul takes transactions of up to 64 operations and 512 KiB (base64: 4/3 of the bytes).
        if batch and (len(batch) == 64 or sum(len(op["value"]) for op in batch) + len(v) > 300_000):
            _kv(consul, batch)
            batch = []
        batch.append({"key": layout.chunk(d), "value": v})
    if batch:
        _kv(consul, batch)
    blob = b"".join(pieces)
    rec = Record(id=new_id(), node=NODE, created="2026-12-07T00:00:00.000+00:00", files=1, dirs=0, symlinks=0,
                 bytes=0, manifest_chunks=tuple(chunking.sha256(p) for p in pieces),
                 manifest_sha256=chunking.sha256(blob), manifest_size=len(blob), chunk_size=chunk_size)
    _kv(consul, [{"key": layout.snapshot(rec.id), "value": rec.encode()}, {"key": layout.head, "value": rec.encode()}])
    return rec


def cut(blob: bytes, size: int = 500_000) -> list[bytes]:
    return [blob[i:i + size] for i in range(0, len(blob), size)]


def restore(consul, prefix: str, target, timeout: float = 900) -> tuple[int, str, float]:
    """Run `statesync restore` into ``target``: its exit code, stderr and peak RSS in MB."""
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_NODE=NODE,
               STATESYNC_ROOT=str(target), STATESYNC_LOG_FORMAT="console")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    err_path = target.parent / f"{target.name}.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(statesync_cmd("restore"), env=env, stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=limit)
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the agent's
    finally:
        proc.returncode = -1  # reaped here: Popen must not wait for it again
    return os.waitstatus_to_exitcode(status), err_path.read_text(), usage.ru_maxrss / 1024


def _assert_refused(code: int, stderr: str, target) -> None:
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert code == EXIT_FAILURE and len(lines) == 1 and lines[0].startswith("statesync: error: "), (code, stderr[-2000:])
    assert "manifest" in lines[0], lines[0]
    assert sorted(os.listdir(target)) in ([], [".statesync-lock"]), os.listdir(target)


def _bomb_of_one_chunk_repeated() -> bytes:
    """The issue's 484 KB manifest: one file whose chunk list names one chunk 7 million times
    (470 MB of JSON, within the old 512 MiB inflate bound)."""
    digest = chunking.sha256(b"x")
    n = 7_000_000
    deflate = zlib.compressobj(9)
    head = b'{"v":1,"e":[{"p":"f","t":"f","m":420,"u":0,"g":0,"mt":0,"s":%d,"h":"%s","c":[' % (
        n * 4096, chunking.sha256(b"whole").encode())
    parts = [deflate.compress(head)]
    item = b'"%s",' % digest.encode()
    block = item * 100_000
    for _ in range(n // 100_000):
        parts.append(deflate.compress(block))
    parts.append(deflate.compress(b'"%s"]}]}' % digest.encode()) + deflate.flush())
    return b"".join(parts)


def _bomb_of_empty_objects() -> bytes:
    """A 30 KB manifest whose unknown member holds ten million empty objects (825 MB parsed whole)."""
    deflate = zlib.compressobj(9)
    parts = [deflate.compress(b'{"v":1,"e":[],"z":[{}')]
    block = b",{}" * 1_000_000
    for _ in range(10):
        parts.append(deflate.compress(block))
    parts.append(deflate.compress(b"]}") + deflate.flush())
    return b"".join(parts)


def _bomb_of_tiny_entries() -> bytes:
    """A million directories, the most the old decoder took: their dicts and entries all at once."""
    text = b'{"v":1,"e":[' + b",".join(b'{"p":"d%07d","t":"d","m":0,"u":0,"g":0,"mt":0}' % i
                                      for i in range(1_000_000)) + b"]}"
    return zlib.compress(text, 9)


@pytest.mark.consul
@pytest.mark.parametrize("make", [_bomb_of_one_chunk_repeated, _bomb_of_empty_objects, _bomb_of_tiny_entries],
                         ids=["one chunk repeated 7 million times", "ten million empty objects",
                              "a million tiny entries"])
def test_a_forged_manifest_built_to_exhaust_memory_fails_restore_with_one_line_within_256_mb(
        consul, prefix, tmp_path, make):
    blob = make()
    plant(consul, prefix, cut(blob))
    target = tmp_path / "target"
    target.mkdir()
    code, stderr, peak = restore(consul, prefix, target)
    print(f"\n{make.__name__}: {len(blob)} bytes stored, exit {code}, peak RSS {peak:.0f} MB, {stderr.strip()[:200]}")
    _assert_refused(code, stderr, target)
    assert peak <= LIMIT_MB, peak


def _real_tree(files: int) -> tuple[mf.Manifest, dict[str, bytes]]:
    """A tree shaped like Icinga 2's API state: a directory per zone, 99 small files in each,
    every file of its own content."""
    entries = [mf.Entry("api", "d", 0o750, 110, 118, 1, user="nagios", group="nagios"),
               mf.Entry("api/zones", "d", 0o750, 110, 118, 1, user="nagios", group="nagios")]
    chunks = {}
    for d in range(files // 99):
        entries.append(mf.Entry(f"api/zones/z{d:05d}", "d", 0o750, 110, 118, 1_700_000_000_000_000_000 + d,
                                user="nagios", group="nagios"))
        for i in range(99):
            data = b'object Host "h%d-%d" { check_command = "hostalive" }\n' % (d, i)
            digest = chunking.sha256(data)
            chunks[digest] = data
            entries.append(mf.Entry(f"api/zones/z{d:05d}/host-{i:04d}.conf", "f", 0o640, 110, 118,
                                    1_700_000_000_000_000_000 + i * 7919, size=len(data), sha256=digest,
                                    chunks=(digest,), user="nagios", group="nagios"))
    return mf.Manifest(tuple(entries)), chunks


@pytest.mark.slow
def test_a_manifest_of_300_000_files_is_within_every_bound():
    """Slow (half a minute and more on a loaded machine): 300,000 entries are built, encoded
    and decoded; the largest tree the brief names must load."""
    manifest, _ = _real_tree(300_000)
    pieces = mf.Encoder().pieces(manifest, chunking.DEFAULT_CHUNK_SIZE)
    decoder = mf.Decoder()
    for piece in pieces:
        decoder.feed(piece)
    assert decoder.result() == manifest
    assert decoder.tally.excess() is None and decoder.tally.entries == len(manifest.entries)
    print(f"\n300,000 files: {decoder.tally}")


@pytest.mark.consul
@pytest.mark.slow
def test_a_real_tree_of_200_000_files_restores_whole_within_256_mb(consul, prefix, tmp_path):
    """Slow (about a minute and a half): 200,000 chunks are stored and 200,000 files written.
    The peak grows by about 830 bytes a file over a 55 MB start: 200,000 files stay within
    256 MB, 300,000 (which the bounds still take) reach about 300 MB."""
    manifest, chunks = _real_tree(200_000)
    plant(consul, prefix, mf.Encoder().pieces(manifest, chunking.DEFAULT_CHUNK_SIZE), chunks)
    del chunks
    target = tmp_path / "target"
    code, stderr, peak = restore(consul, prefix, target)
    print(f"\n{len(manifest.entries)} entries: exit {code}, peak RSS {peak:.0f} MB")
    assert code == 0, stderr[-2000:]
    files = sum(len(names) for _, _, names in os.walk(target))
    assert files == manifest.file_count + 1  # and the root lock
    assert peak <= LIMIT_MB, peak
