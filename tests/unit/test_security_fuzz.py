"""Hostile input: decoders and the tree writer fed random and adversarial data.

Whatever the bytes, the result is a clean StatesyncError or a valid result, never
another exception, and nothing is ever written outside the target directory.
"""
from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statesync.errors import StatesyncError
from statesync.restore.apply import write_tree
from statesync.snapshot import chunking, crypto, manifest_reader
from statesync.snapshot import manifest as mf
from statesync.snapshot.record import decode_record

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_component = st.sampled_from(["a", "b", "..", ".", "", "ca", "c\x00d", "/", "é", "x" * 300])
_path = st.one_of(st.lists(_component, min_size=1, max_size=6).map("/".join),
                  st.sampled_from(["/etc/passwd", "../../x", "a/../../b", "a//b", "link/inside", "loop/x"]),
                  st.text(max_size=40))
_int = st.one_of(st.integers(-2**70, 2**70), st.sampled_from([0, 1, 0o7777, 2**40, -1]), st.booleans(),
                 st.text(max_size=3), st.none())


@st.composite
def _raw_entry(draw) -> dict:
    data = draw(st.binary(max_size=64))
    digest = chunking.sha256(data)
    kind = draw(st.sampled_from(["f", "d", "l", "x", None]))
    d = {"p": draw(_path), "t": kind, "m": draw(st.one_of(st.just(0o644), _int)), "u": 0, "g": 0,
         "mt": draw(st.one_of(st.just(0), _int))}
    if kind == "f":
        d.update(s=draw(st.one_of(st.just(len(data)), _int)), h=digest)
        if draw(st.booleans()):
            d["c"] = draw(st.one_of(st.just([digest]), st.lists(st.just(digest), max_size=3), _int))
    if kind == "l":
        d["l"] = draw(st.sampled_from(["/", "..", "../../../../tmp", "loop", "link", "a"]))
    return d


def _files_outside(base: Path, target: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p != target and target not in p.parents:
                out.append(str(p))
    return out


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_manifest_decoder(blob):
    for candidate in (blob, zlib.compress(blob)):
        try:
            manifest_reader.decode(candidate)
        except StatesyncError:
            pass


@FUZZ
@given(st.binary(min_size=1, max_size=512), st.integers(0, 511))
def test_a_truncated_manifest_is_a_clean_error(payload, cut):
    blob = mf.encode(mf.Manifest((mf.Entry("a", "f", 0o644, 0, 0, 0, size=len(payload),
                                           sha256=chunking.sha256(payload), chunks=(chunking.sha256(payload),)),)))
    try:
        manifest_reader.decode(blob[:cut % len(blob)])
    except StatesyncError:
        pass


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_record_and_chunk_decoders(blob):
    sealer = crypto.Sealer(b"k" * 32)
    for fn in (decode_record, lambda b: sealer.open("n", "0" * 64, b), lambda b: chunking.verify("0" * 64, b)):
        try:
            fn(blob)
        except StatesyncError:
            pass


@FUZZ
@given(st.lists(_raw_entry(), max_size=8))
def test_an_adversarial_manifest_never_writes_outside_the_target(entries):
    blob = zlib.compress(json.dumps({"v": 1, "e": entries}).encode("utf-8", "surrogatepass"))
    try:
        manifest = manifest_reader.decode(blob)
    except StatesyncError:
        return
    with tempfile.TemporaryDirectory() as base:
        target = Path(base) / "target"
        target.mkdir()
        try:
            write_tree(target, manifest, lambda e: b"\x00" * min(e.size, 64))
        except (StatesyncError, OSError):
            pass
        assert _files_outside(Path(base), target) == []


def test_a_symlink_loop_in_a_manifest_is_written_as_links_and_never_followed(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    m = manifest_reader.decode(mf.encode(mf.Manifest((
        mf.Entry("loop", "l", 0o777, 0, 0, 0, target="loop"),
        mf.Entry("a", "l", 0o777, 0, 0, 0, target="b"),
        mf.Entry("b", "l", 0o777, 0, 0, 0, target="a"),
        mf.Entry("up", "l", 0o777, 0, 0, 0, target="../../../../"),
    ))))
    write_tree(target, m, lambda e: b"")
    assert sorted(os.listdir(target)) == ["a", "b", "loop", "up"]
    assert all((target / n).is_symlink() for n in os.listdir(target))
    assert _files_outside(tmp_path, target) == []
