"""Compressed chunks against the real Consul agent: stored smaller, read back exactly, old
snapshots still restore, and a damaged or hostile chunk is refused in one line."""
from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import urllib.request
import zlib

import pytest
import zstandard

from statesync.consul.store import Store
from statesync.errors import CorruptData, EncryptionKeyError
from statesync.repo.repository import Repo
from statesync.restore.apply import fetch_verified
from statesync.snapshot import codec
from statesync.snapshot.chunking import DEFAULT_CHUNK_SIZE
from statesync.snapshot.crypto import Sealer, format_key, generate_key
from statesync.tree.scan import Scanner

from ..sidecar import statesync_env
from ..support import statesync_cmd, tree_state

pytestmark = pytest.mark.consul


def icinga_state(objects: int, seed: int = 1) -> bytes:
    """Icinga 2's icinga2.state: netstring-framed JSON objects with check results."""
    rnd = random.Random(seed)
    out = []
    for i in range(objects):
        t = round(1.7e9 + rnd.uniform(0, 300), 6)
        state = rnd.choice([0] * 17 + [1, 2, 3])
        rta = rnd.uniform(0.05, 80)
        obj = {"name": f"host-{i // 11:05d}!svc-{i % 11}", "type": "Service", "update": {
            "last_check_result": {"active": True, "check_source": "master1", "command": [
                "/usr/lib/nagios/plugins/check_ping", "-H", f"10.0.{i // 256 % 256}.{i % 256}"],
                "execution_start": t, "execution_end": round(t + rnd.uniform(0, 2), 6), "exit_status": state,
                "output": f"PING OK - Packet loss = 0%, RTA = {rta:.2f} ms",
                "performance_data": [f"rta={rta / 1000:.6f}s;3.000000;5.000000;0.000000", "pl=0%;80;100;0"],
                "state": state, "type": "CheckResult"},
            "last_state_change": round(1.7e9 - rnd.uniform(0, 1e6), 6), "next_check": round(t + 300, 6),
            "acknowledgement": 0, "check_attempt": 1, "state_type": 1, "flapping": False}}
        text = json.dumps(obj, separators=(",", ":"))
        out.append(f"{len(text)}:{text},")
    return "".join(out).encode()


def _commit(cfg, repo: Repo, compression: str):
    head = repo.checked_head()
    known = set(repo.refs(head.record)) if head.record else set()
    scan = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size, cfg.sealing, compression=compression).scan(known)
    return repo.commit(scan, head, known)


def _repo(cfg) -> Repo:
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep,
                sealer=cfg.sealing.sealer if cfg.sealing else None,
                seal_manifest=bool(cfg.sealing and cfg.sealing.everything))


def _files(repo: Repo, record) -> dict[str, bytes]:
    manifest, file_bytes = fetch_verified(repo, record)
    return {e.path: file_bytes(e) for e in manifest.entries if e.type == "f"}


def _stored(cfg, repo: Repo, record, path: str) -> list[bytes]:
    entry = fetch_verified(repo, record)[0].by_path()[path]
    store = Store(cfg.consul)
    return [store.get(cfg.layout.chunk(d)).value for d in entry.chunks]


def test_icinga_state_backs_up_at_a_fifteenth_of_its_size_and_restores_byte_for_byte(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    state = icinga_state(20000)
    (root / "icinga2.state").write_bytes(state)
    before = tree_state(root)
    env = statesync_env(f"http://{consul.addr}", prefix, root)
    subprocess.run(statesync_cmd("backup"), env=env, check=True, capture_output=True, timeout=120)
    with urllib.request.urlopen(f"http://{consul.addr}/v1/kv/{prefix}/nodes/node1/chunks/?recurse") as r:
        values = [base64.b64decode(p["Value"]) for p in json.load(r)]
    written = sum(map(len, values))  # the file's chunks and the manifest's
    assert sum(1 for v in values if v[0] == codec.ZSTD) >= len(state) // DEFAULT_CHUNK_SIZE
    assert written * 5 < len(state), f"{written} bytes written for a {len(state)}-byte file"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    subprocess.run(statesync_cmd("restore"), env=env, check=True, capture_output=True, timeout=120)
    assert tree_state(root) == before


@pytest.mark.parametrize("algorithm", ["zstd", "zlib"])
def test_a_compressible_file_is_stored_in_smaller_tagged_chunks_and_reads_back(make_cfg, algorithm):
    cfg = make_cfg()
    cfg.root.mkdir()
    state = icinga_state(6000)
    (cfg.root / "icinga2.state").write_bytes(state)
    repo = _repo(cfg)
    rec = _commit(cfg, repo, algorithm).record
    assert rec.compression == algorithm
    stored = _stored(cfg, repo, rec, "icinga2.state")
    assert len(stored) > 1 and all(v[0] == codec.TAGS[algorithm] for v in stored)
    assert sum(map(len, stored)) * 4 < len(state)
    assert _files(repo, repo.record()) == {"icinga2.state": state}


def test_incompressible_random_data_is_stored_raw(make_cfg):
    cfg = make_cfg()
    cfg.root.mkdir()
    noise = os.urandom(600 * 1024)
    (cfg.root / "noise.bin").write_bytes(noise)
    repo = _repo(cfg)
    rec = _commit(cfg, repo, "zstd").record
    assert b"".join(_stored(cfg, repo, rec, "noise.bin")) == noise
    assert _files(repo, rec) == {"noise.bin": noise}


def test_a_sealed_compressed_chunk_holds_neither_the_plaintext_nor_its_compressed_form(make_cfg, tmp_path):
    key = tmp_path / "key"
    key.write_text(format_key(generate_key()))
    cfg = make_cfg(encryption_key_file=str(key), encrypt_all=True)
    cfg.root.mkdir()
    state = icinga_state(3000)
    (cfg.root / "icinga2.state").write_bytes(state)
    repo = _repo(cfg)
    rec = _commit(cfg, repo, "zstd").record
    stored = _stored(cfg, repo, rec, "icinga2.state")
    pieces = [state[i:i + cfg.chunk_size] for i in range(0, len(state), cfg.chunk_size)]
    for value, piece in zip(stored, pieces, strict=True):
        packed = codec.encode(piece, "zstd")
        assert packed[0] == codec.ZSTD
        assert piece[1000:1064] not in value and packed[100:132] not in value
        assert len(value) < len(piece) // 4  # compressed before it was sealed
    assert _files(repo, rec) == {"icinga2.state": state}
    with pytest.raises((CorruptData, EncryptionKeyError)):  # and another key cannot read it
        fetch_verified(Repo(repo.store, cfg.layout, cfg.chunk_size, sealer=Sealer(generate_key())), rec)


def test_a_snapshot_written_without_compression_is_a_version_1_record_and_restores(make_cfg):
    cfg = make_cfg()
    cfg.root.mkdir()
    state = icinga_state(3000)
    (cfg.root / "icinga2.state").write_bytes(state)
    repo = _repo(cfg)
    rec = _commit(cfg, repo, "none").record
    raw = json.loads(Store(cfg.consul).get(cfg.layout.head).value)
    assert raw["v"] == 1 and "compression" not in raw  # what a reader of before compression reads
    assert b"".join(_stored(cfg, repo, rec, "icinga2.state")) == state
    assert _files(repo, rec) == {"icinga2.state": state}


def test_a_new_snapshot_reusing_raw_chunks_of_an_old_one_restores_with_both_kinds(make_cfg):
    cfg = make_cfg()
    cfg.root.mkdir()
    kept, changed = icinga_state(3000, seed=1), icinga_state(3000, seed=2)
    (cfg.root / "kept.state").write_bytes(kept)
    (cfg.root / "changed.state").write_bytes(changed)
    repo = _repo(cfg)
    _commit(cfg, repo, "none")
    changed = icinga_state(3000, seed=3)
    (cfg.root / "changed.state").write_bytes(changed)
    res = _commit(cfg, repo, "zstd")
    assert res.record.compression == "zstd" and json.loads(res.record.encode())["v"] == 2
    assert b"".join(_stored(cfg, repo, res.record, "kept.state")) == kept  # reused, raw
    assert all(v[0] == codec.ZSTD for v in _stored(cfg, repo, res.record, "changed.state"))
    assert _files(repo, res.record) == {"kept.state": kept, "changed.state": changed}
    # A later commit without compression still says its reused chunks may be compressed.
    (cfg.root / "new.txt").write_bytes(b"x")
    assert _commit(cfg, repo, "none").record.compression == "zstd"


def test_a_snapshot_as_the_previous_default_wrote_it_restores_and_a_commit_at_the_new_default_follows_it(
        consul, prefix, make_cfg, tmp_path):
    # Until issue 26 the default was 256 KiB chunks, and a chunk that zstd -1 shrank more than
    # fourfold was stored as its level-6 frame. Both are properties of what was written, not of
    # the format: the record carries its chunk size and a reader decodes any zstd frame.
    old_size = 256 * 1024
    cfg = make_cfg(chunk_size=old_size)
    cfg.root.mkdir()
    state = icinga_state(8000)
    (cfg.root / "icinga2.state").write_bytes(state)
    (cfg.root / "small.txt").write_bytes(b"unchanged\n")
    repo = _repo(cfg)
    old = _commit(cfg, repo, "zstd").record
    store = Store(cfg.consul)
    entry = fetch_verified(repo, old)[0].by_path()["icinga2.state"]
    pieces = [state[i:i + old_size] for i in range(0, len(state), old_size)]
    assert old.chunk_size == old_size and len(entry.chunks) == len(pieces) > 1
    for digest, piece in zip(entry.chunks, pieces, strict=True):
        store.put(cfg.layout.chunk(digest), bytes((codec.ZSTD,)) + zstandard.ZstdCompressor(level=6).compress(piece))
    assert _files(repo, old) == {"icinga2.state": state, "small.txt": b"unchanged\n"}

    new_cfg = make_cfg()
    assert new_cfg.chunk_size == DEFAULT_CHUNK_SIZE > old_size
    new_repo = _repo(new_cfg)
    state = icinga_state(8000, seed=2)
    (cfg.root / "icinga2.state").write_bytes(state)
    new = _commit(new_cfg, new_repo, "zstd").record
    assert new.chunk_size == DEFAULT_CHUNK_SIZE and new.parent == old.id
    by_path = fetch_verified(new_repo, new)[0].by_path()
    assert len(by_path["icinga2.state"].chunks) == -(-len(state) // DEFAULT_CHUNK_SIZE)
    assert by_path["small.txt"].chunks == fetch_verified(repo, old)[0].by_path()["small.txt"].chunks  # reused
    env = statesync_env(f"http://{consul.addr}", prefix, tmp_path / "restored")
    for snapshot, content in ((old.id, pieces), (new.id, [state])):
        target = tmp_path / f"restored-{snapshot}"
        subprocess.run(statesync_cmd("restore", "--snapshot", snapshot),
                       env={**env, "STATESYNC_ROOT": str(target)}, check=True, capture_output=True, timeout=120)
        assert (target / "icinga2.state").read_bytes() == b"".join(content)
        assert (target / "small.txt").read_bytes() == b"unchanged\n"


def test_a_corrupted_compressed_chunk_fails_the_restore_in_one_line_and_writes_nothing(consul, prefix, tmp_path,
                                                                                      make_cfg):
    root = tmp_path / "root"
    root.mkdir()
    (root / "icinga2.state").write_bytes(icinga_state(3000))
    env = statesync_env(f"http://{consul.addr}", prefix, root)
    subprocess.run(statesync_cmd("backup"), env=env, check=True, capture_output=True, timeout=120)
    cfg = make_cfg()
    repo = _repo(cfg)
    key = cfg.layout.chunk(fetch_verified(repo, repo.record())[0].by_path()["icinga2.state"].chunks[0])
    value = bytearray(Store(cfg.consul).get(key).value)
    assert value[0] == codec.ZSTD
    # A single flipped bit can land in bits zstd never reads (and the content check would pass
    # rightly then): damage a stretch.
    value[len(value) // 2:len(value) // 2 + 64] = bytes(b ^ 0x5A for b in value[len(value) // 2:len(value) // 2 + 64])
    Store(cfg.consul).put(key, bytes(value))
    subprocess.run(["rm", "-rf", str(root)], check=True)
    proc = subprocess.run(statesync_cmd("restore"), env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1 and "chunk" in proc.stderr, proc.stderr
    assert not root.exists() or not [n for n in os.listdir(root) if not n.startswith(".statesync-")]


@pytest.mark.parametrize("bomb", [
    bytes((codec.ZSTD,)) + zstandard.ZstdCompressor().compress(bytes(256 << 20)),
    bytes((codec.ZLIB,)) + zlib.compress(bytes(16 << 20), 9),
], ids=["zstd", "zlib"])
def test_a_decompression_bomb_in_place_of_a_chunk_is_refused(make_cfg, bomb):
    cfg = make_cfg()
    cfg.root.mkdir()
    (cfg.root / "small.txt").write_bytes(b"hello, " * 1000)
    repo = _repo(cfg)
    rec = _commit(cfg, repo, "zstd").record
    digest = fetch_verified(repo, rec)[0].by_path()["small.txt"].sha256
    assert len(bomb) < 20_000
    Store(cfg.consul).put(cfg.layout.chunk(digest), bomb)
    with pytest.raises(CorruptData, match="expands beyond the 7000 bytes it claims") as info:
        fetch_verified(repo, rec)
    assert "\n" not in str(info.value)
