"""Unit tests for statesync.manifest: encoding, decoding and validation. Pure, no I/O."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.errors import CorruptData, StatesyncError, StreamError, UnsafePath
from statesync.snapshot import limits, manifest_reader
from statesync.snapshot import manifest as mf
from statesync.snapshot.chunking import MIN_CHUNK_SIZE
from statesync.snapshot.jsonstream import ObjectStream
from statesync.snapshot.manifest import DIR, FILE, SYMLINK, Entry, Manifest, check_path, encode
from statesync.snapshot.manifest_reader import decode

FAST = settings(max_examples=150, deadline=None, database=None)
# Whole manifests are costly to generate; fewer examples still cover every entry kind.
TREES = settings(max_examples=60, deadline=None, database=None)

EMPTY_SHA = hashlib.sha256(b"").hexdigest()
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()
SHA_C = hashlib.sha256(b"c").hexdigest()


def blob_of(doc: object) -> bytes:
    return zlib.compress(json.dumps(doc).encode())


def fentry(path: str = "f", **over) -> dict:
    d = {"p": path, "t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 1, "s": 1, "h": SHA_A}
    d.update(over)
    return d


def dentry(path: str = "d", **over) -> dict:
    d = {"p": path, "t": "d", "m": 0o755, "u": 0, "g": 0, "mt": 1}
    d.update(over)
    return d


def lentry(path: str = "l", target: str = "somewhere", **over) -> dict:
    d = {"p": path, "t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 1, "l": target}
    d.update(over)
    return d


def doc_of(*entries: dict) -> dict:
    return {"v": 1, "e": list(entries)}


def decode_entries(*entries: dict) -> Manifest:
    return decode(blob_of(doc_of(*entries)))


# --- strategies ---------------------------------------------------------------------

def _fs_name(raw: bytes) -> str:
    """A file name as os.fsdecode makes it on a UTF-8 system: undecodable bytes become surrogates."""
    return raw.decode("utf-8", "surrogateescape")


_UNICODE_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
                        min_size=1, max_size=12)
_BYTES_NAME = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\x00" not in b).map(_fs_name)
NAME = st.one_of(_UNICODE_NAME, _BYTES_NAME).filter(lambda s: s not in (".", ".."))
PATH = st.lists(NAME, min_size=1, max_size=4).map("/".join)
SHA = st.binary(max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@st.composite
def _common(draw, path: str) -> dict:
    return dict(path=path, mode=draw(st.integers(0, 0o7777)), uid=draw(st.integers(0, 2**32 - 1)),
                gid=draw(st.integers(0, 2**32 - 1)), mtime_ns=draw(st.integers(-(2**63), 2**63 - 1)),
                user=draw(TEXT), group=draw(TEXT))


@st.composite
def file_entry(draw, path: str) -> Entry:
    common = draw(_common(path))
    kind = draw(st.sampled_from(["empty", "one", "many"]))
    if kind == "empty":
        return Entry(type=FILE, size=0, sha256=EMPTY_SHA, chunks=(), **common)
    size = draw(st.integers(1, mf.MAX_FILE_SIZE))
    if kind == "one":
        sha = draw(SHA)
        return Entry(type=FILE, size=size, sha256=sha, chunks=(sha,), **common)
    chunks = tuple(draw(st.lists(SHA, min_size=2, max_size=4)))
    # Each chunk but the last holds at least the smallest chunk size (limits.max_chunks).
    size = max(size, (len(chunks) - 1) * MIN_CHUNK_SIZE + 1)
    return Entry(type=FILE, size=size, sha256=draw(SHA), chunks=chunks, **common)


@st.composite
def symlink_entry(draw, path: str) -> Entry:
    target = draw(st.one_of(PATH, st.just("../../etc/passwd"), st.just("/abs/target"), TEXT.filter(bool)))
    return Entry(type=SYMLINK, target=target, **draw(_common(path)))


@st.composite
def dir_entry(draw, path: str) -> Entry:
    return Entry(type=DIR, **draw(_common(path)))


@st.composite
def manifests(draw) -> Manifest:
    paths = draw(st.lists(PATH, max_size=8, unique=True))
    # Every ancestor of a listed path that is itself listed must be a directory.
    ancestors = {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}
    entries = []
    for p in paths:
        if p in ancestors:
            entries.append(draw(dir_entry(p)))
        else:
            maker = draw(st.sampled_from([file_entry, dir_entry, symlink_entry]))
            entries.append(draw(maker(p)))
    return Manifest(tuple(entries))


# --- round trip ---------------------------------------------------------------------

@TREES
@given(manifests())
def test_decoding_an_encoded_manifest_gives_back_its_entries_in_path_order(m):
    back = decode(encode(m))
    assert back.entries == tuple(sorted(m.entries, key=lambda e: e.path))


@TREES
@given(manifests())
def test_encoding_does_not_depend_on_the_order_of_entries(m):
    assert encode(m) == encode(Manifest(tuple(reversed(m.entries))))


def test_an_empty_file_round_trips_with_no_chunks_and_the_sha256_of_nothing():
    e = Entry("empty", FILE, 0o600, 1, 2, 3, size=0, sha256=EMPTY_SHA, chunks=())
    (back,) = decode(encode(Manifest((e,)))).entries
    assert back == e
    assert back.chunks == ()
    assert back.sha256 == hashlib.sha256(b"").hexdigest()


def test_a_single_chunk_file_round_trips_without_storing_its_chunk_list():
    e = Entry("f", FILE, 0o644, 0, 0, 0, size=1, sha256=SHA_A, chunks=(SHA_A,))
    raw = json.loads(zlib.decompress(encode(Manifest((e,)))))
    assert "c" not in raw["e"][0]
    assert decode(encode(Manifest((e,)))).entries == (e,)


def test_a_multi_chunk_file_round_trips_with_its_chunks_in_order():
    e = Entry("f", FILE, 0o644, 0, 0, 0, size=2 * MIN_CHUNK_SIZE + 1, sha256=SHA_A, chunks=(SHA_C, SHA_B, SHA_C))
    assert decode(encode(Manifest((e,)))).entries == (e,)


def test_unicode_and_undecodable_names_round_trip():
    names = ["zönes/名前.conf", _fs_name(b"bad\xff\xfename"), "emoji \U0001F600", "tab\tand space"]
    entries = tuple(Entry(n, DIR, 0o755, 0, 0, 0) for n in names)
    assert {e.path for e in decode(encode(Manifest(entries))).entries} == set(names)


def test_a_symlink_round_trips_with_its_target_and_owner_names():
    e = Entry("l", SYMLINK, 0o777, 5, 6, 7, target="../x", user="icinga", group="icinga")
    assert decode(encode(Manifest((e,)))).entries == (e,)


def test_an_empty_manifest_round_trips():
    assert decode(encode(Manifest())) == Manifest()


def test_encode_produces_zlib_compressed_compact_json_with_version_one():
    raw = zlib.decompress(encode(Manifest((Entry("d", DIR, 0o755, 0, 0, 0),))))
    doc = json.loads(raw)
    assert doc["v"] == mf.FORMAT_VERSION == 1
    assert b" " not in raw


# --- manifest helpers ---------------------------------------------------------------

def test_manifest_helpers_count_files_bytes_and_chunk_references():
    m = Manifest((
        Entry("a", FILE, 0o644, 0, 0, 0, size=10, sha256=SHA_A, chunks=(SHA_A,)),
        Entry("b", FILE, 0o644, 0, 0, 0, size=20, sha256=SHA_B, chunks=(SHA_B, SHA_C)),
        Entry("e", FILE, 0o644, 0, 0, 0, size=0, sha256=EMPTY_SHA, chunks=()),
        Entry("d", DIR, 0o755, 0, 0, 0),
        Entry("l", SYMLINK, 0o777, 0, 0, 0, target="a"),
    ))
    assert m.file_count == 3
    assert m.total_bytes == 30
    assert m.chunk_refs() == {SHA_A, SHA_B, SHA_C}
    assert set(m.by_path()) == {"a", "b", "e", "d", "l"}
    assert m.by_path()["l"].target == "a"


def test_same_content_ignores_metadata_and_same_metadata_ignores_content():
    a = Entry("a", FILE, 0o644, 0, 0, 1, size=1, sha256=SHA_A, chunks=(SHA_A,))
    touched = Entry("a", FILE, 0o600, 1, 1, 2, size=1, sha256=SHA_A, chunks=(SHA_A,))
    changed = Entry("a", FILE, 0o644, 0, 0, 1, size=1, sha256=SHA_B, chunks=(SHA_B,))
    assert a.same_content(touched) and not a.same_metadata(touched)
    assert a.same_metadata(changed) and not a.same_content(changed)


# --- check_path ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["a", "a/b/c", "ca/ca.crt", "api/zones/master/_etc/hosts.conf",
                                  ".hidden", "...", "a..b", "..a", "a.", "zönes/名前", "with space",
                                  "back\\slash", "/".join(["d"] * 1000), "/".join(["n" * 255] * 20)])
def test_check_path_accepts_and_returns_a_normal_relative_path(path):
    assert check_path(path) == path


@pytest.mark.parametrize("path", ["", None, 5, b"a", ["a"]])
def test_check_path_rejects_empty_and_non_string_paths(path):
    with pytest.raises(UnsafePath):
        check_path(path)


@pytest.mark.parametrize("path", ["..", "../a", "a/..", "a/../b", "a/b/../../.."])
def test_check_path_rejects_parent_components(path):
    with pytest.raises(UnsafePath):
        check_path(path)


@pytest.mark.parametrize("path", ["/", "/etc/passwd", "//a"])
def test_check_path_rejects_absolute_paths(path):
    with pytest.raises(UnsafePath):
        check_path(path)


@pytest.mark.parametrize("path", [".", "./a", "a/.", "a//b", "a/", "a/./b"])
def test_check_path_rejects_empty_and_dot_components(path):
    with pytest.raises(UnsafePath):
        check_path(path)


@pytest.mark.parametrize("path", ["a\x00", "\x00", "a/\x00/b"])
def test_check_path_rejects_nul_bytes(path):
    with pytest.raises(UnsafePath):
        check_path(path)


def test_check_path_sets_no_depth_limit_and_no_path_max_of_its_own():
    assert check_path("/".join(["d"] * 5000)) == "/".join(["d"] * 5000)
    assert len(check_path("/".join(["n" * 255] * 40)).encode()) > 4096


def test_check_path_rejects_paths_beyond_its_hostile_input_bound():
    with pytest.raises(UnsafePath):
        check_path("x" * (mf.MAX_PATH_BYTES + 1))
    with pytest.raises(UnsafePath):
        check_path("é" * (mf.MAX_PATH_BYTES // 2 + 1))  # counted in UTF-8 bytes


def test_unsafe_path_and_corrupt_data_are_statesync_errors():
    assert issubclass(UnsafePath, CorruptData)
    assert issubclass(CorruptData, StatesyncError)


# --- decode: paths and tree ---------------------------------------------------------

@pytest.mark.parametrize("path", ["..", "../etc/passwd", "a/../../x", "/etc/passwd", "a//b", "a/",
                                  "./a", "a\x00b", "", 7, None])
def test_decode_rejects_an_unsafe_path_with_unsafe_path(path):
    with pytest.raises(UnsafePath):
        decode_entries(dentry(path))


def test_decode_rejects_an_entry_without_a_path():
    d = dentry()
    del d["p"]
    with pytest.raises(UnsafePath):
        decode_entries(d)


@pytest.mark.parametrize("child", ["l/x", "l/x/y"])
def test_decode_rejects_a_path_below_a_symlink_as_unsafe(child):
    with pytest.raises(UnsafePath):
        decode_entries(lentry("l", "/etc"), fentry(child))


def test_decode_rejects_a_path_below_a_symlink_listed_after_it():
    with pytest.raises(UnsafePath):
        decode_entries(fentry("a/l/x"), dentry("a"), lentry("a/l", "/etc"))


@pytest.mark.parametrize("child", ["f/x", "f/x/y"])
def test_decode_rejects_a_path_below_a_file(child):
    with pytest.raises(CorruptData):
        decode_entries(fentry("f"), dentry(child))


def test_decode_accepts_paths_whose_parent_directories_are_not_listed():
    m = decode_entries(fentry("a/b/c"))
    assert [e.path for e in m.entries] == ["a/b/c"]


def test_decode_accepts_a_sibling_that_shares_a_symlinks_name_as_a_prefix():
    m = decode_entries(lentry("l", "/etc"), fentry("lx/y"))
    assert len(m.entries) == 2


@pytest.mark.parametrize("second", [fentry("x"), dentry("x"), lentry("x")])
def test_decode_rejects_a_path_listed_twice(second):
    with pytest.raises(CorruptData):
        decode_entries(dentry("x"), second)


# --- decode: fields -----------------------------------------------------------------

@pytest.mark.parametrize("sha", [SHA_A.upper(), SHA_A[:-1], SHA_A + "0", "g" * 64, "", 5, None,
                                 ["x"], " " + SHA_A[1:]])
def test_decode_rejects_a_file_with_a_bad_sha256(sha):
    with pytest.raises(CorruptData):
        decode_entries(fentry(h=sha, c=[SHA_A]))


def test_decode_rejects_a_file_without_a_sha256():
    d = fentry()
    del d["h"]
    with pytest.raises(CorruptData):
        decode_entries(d)


def test_decode_rejects_a_sha256_with_a_trailing_newline():
    with pytest.raises(CorruptData):
        decode_entries(fentry(h=SHA_A + "\n", c=[SHA_A]))


@pytest.mark.parametrize("chunks", [SHA_A, [SHA_A, "nope"], [SHA_A.upper()], [5], {"a": SHA_A}, None])
def test_decode_rejects_a_bad_chunk_list(chunks):
    with pytest.raises(CorruptData):
        decode_entries(fentry(c=chunks))


@pytest.mark.parametrize("over", [{"s": 0}, {"s": 0, "c": [SHA_A]}, {"s": 5, "c": []}])
def test_decode_rejects_a_file_whose_size_and_chunk_list_disagree(over):
    with pytest.raises(CorruptData):
        decode_entries(fentry(**over))


def test_decode_accepts_an_empty_file_with_an_empty_chunk_list():
    (e,) = decode_entries(fentry(s=0, h=EMPTY_SHA, c=[])).entries
    assert (e.size, e.chunks, e.sha256) == (0, (), EMPTY_SHA)


def test_decode_takes_the_whole_digest_as_the_only_chunk_when_the_list_is_missing():
    (e,) = decode_entries(fentry(s=3)).entries
    assert e.chunks == (SHA_A,)


@pytest.mark.parametrize("size", [mf.MAX_FILE_SIZE + 1, 2**63, 10**30, -1])
def test_decode_rejects_a_huge_or_negative_size(size):
    with pytest.raises(CorruptData):
        decode_entries(fentry(s=size))


def test_decode_accepts_the_largest_allowed_size():
    (e,) = decode_entries(fentry(s=mf.MAX_FILE_SIZE)).entries
    assert e.size == mf.MAX_FILE_SIZE


@pytest.mark.parametrize("field,value", [
    ("m", 0o10000), ("m", -1), ("u", 2**32), ("u", -1), ("g", 2**32), ("g", -1),
    ("mt", 2**63), ("mt", -(2**63) - 1),
])
def test_decode_rejects_an_integer_field_out_of_range(field, value):
    with pytest.raises(CorruptData):
        decode_entries(dentry(**{field: value}))


def test_decode_accepts_integer_fields_at_the_edges_of_their_range():
    (e,) = decode_entries(dentry(m=0o7777, u=2**32 - 1, g=2**32 - 1, mt=-(2**63))).entries
    assert (e.mode, e.uid, e.gid, e.mtime_ns) == (0o7777, 2**32 - 1, 2**32 - 1, -(2**63))


@pytest.mark.parametrize("field", ["m", "u", "g", "mt", "s"])
@pytest.mark.parametrize("value", ["644", 1.0, 1.5, True, False, None, [1], {"x": 1}])
def test_decode_rejects_a_non_integer_numeric_field(field, value):
    with pytest.raises(CorruptData):
        decode_entries(fentry(**{field: value}))


@pytest.mark.parametrize("field", ["U", "G"])
@pytest.mark.parametrize("value", [5, None, ["x"], "x" * 257, "ic\x00inga"])
def test_decode_rejects_a_bad_owner_name(field, value):
    with pytest.raises(CorruptData):
        decode_entries(dentry(**{field: value}))


@pytest.mark.parametrize("kind", ["x", "F", "", None, 1])
def test_decode_rejects_an_unknown_entry_type(kind):
    with pytest.raises(CorruptData):
        decode_entries(dentry(t=kind))


@pytest.mark.parametrize("target", ["", 5, None, "a\x00b", "x" * (mf.MAX_LINK_TARGET + 1)])
def test_decode_rejects_a_symlink_with_a_bad_or_missing_target(target):
    with pytest.raises(CorruptData):
        decode_entries(lentry(target=target))


def test_decode_rejects_a_symlink_without_a_target_field():
    d = lentry()
    del d["l"]
    with pytest.raises(CorruptData):
        decode_entries(d)


@pytest.mark.parametrize("entry", [[], "x", 5, None])
def test_decode_rejects_an_entry_that_is_not_an_object(entry):
    with pytest.raises(CorruptData):
        decode_entries(entry)


def test_decode_rejects_a_path_with_a_lone_surrogate_as_corrupt_data():
    with pytest.raises(CorruptData):
        decode_entries(dentry("\ud800"))


# --- decode: document ---------------------------------------------------------------

@pytest.mark.parametrize("doc", [
    {"v": 2, "e": []}, {"v": 0, "e": []}, {"v": "1", "e": []}, {"v": None, "e": []}, {"e": []},
    {"v": 1}, {"v": 1, "e": {}}, {"v": 1, "e": "x"}, [], [1, []], "manifest", 1, None,
])
def test_decode_rejects_a_wrong_version_or_a_missing_entry_list(doc):
    with pytest.raises(CorruptData):
        decode(blob_of(doc))


def test_decode_rejects_a_boolean_version():
    with pytest.raises(CorruptData):
        decode(blob_of({"v": True, "e": []}))


def test_decode_rejects_a_manifest_with_too_many_entries(monkeypatch):
    monkeypatch.setattr(limits, "MAX_ENTRIES", 2)
    decode_entries(dentry("a"), dentry("b"))
    with pytest.raises(CorruptData):
        decode_entries(dentry("a"), dentry("b"), dentry("c"))


@pytest.mark.parametrize("keep", [0, 1, 2, 10, -1, -4])
def test_decode_rejects_truncated_zlib_data(keep):
    blob = blob_of(doc_of(fentry("a"), dentry("b")))
    with pytest.raises(CorruptData):
        decode(blob[:keep])


@pytest.mark.parametrize("blob", [b"", b"not zlib at all", b"\x00" * 32,
                                  zlib.compress(b"not json"), zlib.compress(b"\xff\xfe"),
                                  zlib.compress(b"[" * 100_000), zlib.compress(b"1" * 5000)])
def test_decode_rejects_data_that_is_not_compressed_json(blob):
    with pytest.raises(CorruptData):
        decode(blob)


def test_decode_rejects_a_manifest_that_inflates_beyond_the_limit(monkeypatch):
    monkeypatch.setattr(limits, "MAX_INFLATED_BYTES", 4096)
    bomb = zlib.compress(b'{"v":1,"e":[]}' + b" " * 1_000_000, 9)
    assert len(bomb) < 4096
    with pytest.raises(CorruptData):
        decode(bomb)


def test_decode_accepts_a_manifest_exactly_at_the_inflate_limit(monkeypatch):
    monkeypatch.setattr(limits, "MAX_INFLATED_BYTES", 4096)
    raw = b'{"v":1,"e":[]}'
    assert decode(zlib.compress(raw + b" " * (4096 - len(raw)))) == Manifest()
    with pytest.raises(CorruptData):
        decode(zlib.compress(raw + b" " * (4097 - len(raw))))


@FAST
@given(st.binary(max_size=300))
def test_decoding_random_bytes_returns_a_manifest_or_raises_corrupt_data(data):
    try:
        result = decode(data)
    except CorruptData:
        return
    assert isinstance(result, Manifest)


@FAST
@given(st.binary(max_size=300))
def test_decoding_random_compressed_bytes_returns_a_manifest_or_raises_corrupt_data(data):
    try:
        result = decode(zlib.compress(data))
    except CorruptData:
        return
    assert isinstance(result, Manifest)


_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                  st.floats(allow_nan=False), TEXT, st.lists(st.integers(), max_size=2),
                  st.dictionaries(TEXT, st.integers(), max_size=2))
_FIELD = {
    "p": st.one_of(PATH, st.sampled_from(["..", "/x", "a//b", "a/..", ""]), _JUNK),
    "t": st.one_of(st.sampled_from(["f", "d", "l"]), _JUNK),
    "m": st.one_of(st.integers(-1, 0o10000), _JUNK),
    "u": st.one_of(st.integers(-1, 2**32), _JUNK),
    "g": _JUNK, "mt": _JUNK, "U": _JUNK, "G": _JUNK,
    "s": st.one_of(st.integers(-1, 10), _JUNK),
    "h": st.one_of(SHA, _JUNK),
    "c": st.one_of(st.lists(SHA, max_size=3), _JUNK),
    "l": st.one_of(PATH, _JUNK),
    "k": st.one_of(PATH, _JUNK),
}
_FUZZ_ENTRY = st.fixed_dictionaries({}, optional=_FIELD)


_ROOT = st.one_of(st.none(), _JUNK, st.fixed_dictionaries({}, optional={k: _FIELD[k] for k in "mugUG"}))


@TREES
@given(st.lists(_FUZZ_ENTRY, max_size=6), st.one_of(st.just(1), _JUNK), _ROOT)
def test_decoding_a_fuzzed_entry_list_returns_a_manifest_or_raises_corrupt_data(entries, version, root):
    doc = {"v": version, "e": entries}
    if root is not None:
        doc["r"] = root
    try:
        result = decode(blob_of(doc))
    except CorruptData:
        return
    assert isinstance(result, Manifest)
    for e in result.entries:
        assert check_path(e.path) == e.path


# --- tree order, the root's own metadata, hard links -----------------------------------

def test_tree_order_puts_a_directory_s_whole_subtree_before_its_next_sibling():
    paths = ["a-c", "a/b", "a", "a/b/c", "a.d", "b", "a/z"]
    assert sorted(paths, key=mf.tree_order) == ["a", "a/b", "a/b/c", "a/z", "a-c", "a.d", "b"]


ROOT = Entry(".", DIR, 0o750, 110, 118, 1_700_000_000_123_456_789, user="nagios", group="nagios")


def test_the_root_s_mode_owner_and_mtime_survive_encoding():
    m = Manifest((Entry("a", DIR, 0o755, 0, 0, 1),), ROOT)
    assert decode(encode(m)).root == ROOT


def test_the_root_of_an_empty_manifest_survives_encoding():
    assert decode(encode(Manifest((), ROOT))).root == ROOT


def test_a_manifest_written_before_the_root_was_recorded_decodes_without_it():
    m = decode_entries(dentry("d"))
    assert m.root is None and [e.path for e in m.entries] == ["d"]
    assert b'"r"' not in zlib.decompress(encode(m))


@pytest.mark.parametrize("root", [5, "x", [], {"m": 0o10000}, {"u": -1}, {"mt": "1"}, {"U": 5}])
def test_decode_rejects_a_bad_root_record(root):
    doc = doc_of(dentry("d"))
    doc["r"] = root
    with pytest.raises(CorruptData):
        decode(blob_of(doc))


def test_the_root_record_lives_in_the_stream_s_end_piece_not_in_a_segment():
    entries = tuple(Entry(f"f{i:05d}", FILE, 0o644, 0, 0, i, size=1, sha256=SHA_A, chunks=(SHA_A,))
                    for i in range(5000))
    enc = mf.Encoder()
    first = enc.pieces(Manifest(entries, ROOT), 4096)
    second = enc.pieces(Manifest(entries, dataclasses.replace(ROOT, mtime_ns=5)), 4096)
    assert len(first) == len(second) > 2
    assert [a == b for a, b in zip(first, second, strict=True)].count(False) == 1 and first[-1] != second[-1]


def _hard_linked(*paths: str, **over) -> tuple[Entry, ...]:
    first = Entry(paths[0], FILE, 0o640, 0, 0, 7, size=1, sha256=SHA_A, chunks=(SHA_A,))
    return (first, *(Entry(p, FILE, 0o640, 0, 0, 7, size=1, sha256=SHA_A, chunks=(SHA_A,),
                           link=over.get("link", paths[0])) for p in paths[1:]))


def test_a_hard_link_survives_encoding_and_a_plain_file_carries_no_link_field():
    m = Manifest(_hard_linked("a/x", "b", "c/y"))
    back = decode(encode(m))
    assert [(e.path, e.link) for e in back.entries] == [("a/x", ""), ("b", "a/x"), ("c/y", "a/x")]
    doc = json.loads(zlib.decompress(encode(m)))
    assert [("k" in d) for d in doc["e"]] == [False, True, True]


def test_a_link_may_precede_its_target_in_path_order_but_not_in_tree_order():
    # "a/x" sorts after "a-b" as a string, but a restore writes the directory "a" first
    tree = (Entry("a", DIR, 0o755, 0, 0, 1), *_hard_linked("a/x", "a-b"))
    assert [e.link for e in decode(encode(Manifest(tree))).entries] == ["", "a/x", ""]


@pytest.mark.parametrize("link", ["missing", "c", "d", "l", "..", "/etc/passwd", 5, ["a"]])
def test_decode_rejects_a_hard_link_to_anything_but_an_earlier_file(link):
    doc = doc_of(fentry("a"), fentry("c"), dentry("d"), lentry("l"), fentry("b", k=link))
    with pytest.raises(CorruptData):
        decode(blob_of(doc))


def test_decode_rejects_a_hard_link_whose_content_differs_from_its_target():
    with pytest.raises(CorruptData):
        decode_entries(fentry("a"), fentry("b", h=SHA_B, k="a"))


def test_decode_rejects_a_hard_link_to_a_hard_link():
    with pytest.raises(CorruptData):
        decode_entries(fentry("a"), fentry("b", k="a"), fentry("c", k="b"))


# --- bounds (snapshot/limits.py) and the streaming decoder ---------------------------

def test_a_file_may_have_one_chunk_per_smallest_chunk_size_of_its_bytes():
    assert [limits.max_chunks(n) for n in (0, 1, MIN_CHUNK_SIZE, MIN_CHUNK_SIZE + 1, 10 * MIN_CHUNK_SIZE)] == [
        0, 1, 1, 2, 10]


@pytest.mark.parametrize("field,bound", [("stored", "MAX_STORED_BYTES"), ("inflated", "MAX_INFLATED_BYTES"),
                                         ("entries", "MAX_ENTRIES"), ("chunk_refs", "MAX_CHUNK_REFS"),
                                         ("memory", "MAX_ENTRY_MEMORY")])
def test_a_tally_at_a_bound_passes_and_one_past_it_says_which_bound(field, bound):
    at = limits.Tally(**{field: getattr(limits, bound)})
    assert at.excess() is None
    past = limits.Tally(**{field: getattr(limits, bound) + 1})
    assert past.excess() and past.excess().split()[0] in ("is", "inflates", "has", "references", "would")
    assert limits.Tally().excess() is None


def test_an_entry_s_memory_counts_the_object_its_own_values_new_shared_values_and_a_sort_s_copy_of_its_path():
    e = Entry("a/b", FILE, 0o644, 0, 0, 0, size=1, sha256=SHA_A, chunks=(SHA_A,))
    def alloc(o: object) -> int:  # what the allocator hands out: multiples of 16 bytes
        return -(-sys.getsizeof(o) // 16) * 16
    kept, sort, table = limits.entry_memory(e, ("", (), 0, 7), "a/b", ())
    assert kept == alloc(e) + limits.PER_ENTRY  # empty values and small integers are shared
    assert sort == sys.getsizeof("a/b") + limits.PER_KEY and table == 0
    assert limits.entry_memory(e, ("a/b", 2**62), "a/b", ())[0] == kept + alloc("a/b") + alloc(2**62)
    assert limits.entry_memory(e, (), "a/b", (SHA_A, SHA_B))[::2] == (kept + 2 * alloc(SHA_A), 2 * limits.PER_VALUE)


def test_a_tally_holds_what_entries_keep_and_the_larger_of_a_sort_and_the_decoder_s_table_with_a_parse():
    tally = limits.Tally()
    tally.add(1000, 10, 0)
    assert tally.memory == 1000 + limits.PARSE
    tally.add(0, limits.PARSE + 100, 0)
    assert tally.memory == 1000 + limits.PARSE + 110


def test_the_largest_real_trees_fit_every_bound():
    """300,000 small files of one chunk each under 31-byte paths (Icinga 2's
    api/zones/<zone>/<object>.conf), and a 374 MB state file at the default chunk size: what a
    bound must never refuse."""
    tally = limits.Tally()
    for i in range(300):
        e = Entry(f"api/zones/z00000/host-{i:04d}.conf", FILE, 0o644, 0, 0, 2**62, size=60, sha256=SHA_A,
                  chunks=(SHA_A,))
        tally.add(*limits.entry_memory(e, (e.path, e.chunks, e.mtime_ns, e.size), e.path, (SHA_A,)))
    per_file = (tally.memory - limits.PARSE) / 300
    assert 300_000 * per_file + limits.PARSE <= limits.MAX_ENTRY_MEMORY
    assert -(-374_000_000 // (256 * 1024)) * len(f'"{SHA_A}",') + 400 <= limits.MAX_VALUE_CHARS


def test_decode_rejects_a_file_with_more_chunks_than_its_size_can_hold():
    with pytest.raises(CorruptData, match="3 chunks for"):
        decode_entries(fentry("f", s=2 * MIN_CHUNK_SIZE, h=SHA_B, c=[SHA_A, SHA_B, SHA_C]))
    assert decode_entries(fentry("f", s=2 * MIN_CHUNK_SIZE + 1, h=SHA_B, c=[SHA_A, SHA_B, SHA_C])).entries


def test_decode_rejects_an_entry_whose_text_passes_the_bound(monkeypatch):
    monkeypatch.setattr(limits, "MAX_VALUE_CHARS", 200)
    decode_entries(fentry("a" * 50))
    with pytest.raises(CorruptData, match="more than 200 characters"):
        decode_entries(fentry("a" * 300))


def test_decode_rejects_an_unknown_member_whose_text_passes_the_bound(monkeypatch):
    monkeypatch.setattr(limits, "MAX_VALUE_CHARS", 200)
    with pytest.raises(CorruptData, match="more than 200 characters"):
        decode(blob_of({"v": 1, "e": [], "z": [{}] * 100}))


def test_decode_stops_at_the_memory_bound(monkeypatch):
    monkeypatch.setattr(limits, "MAX_ENTRY_MEMORY", limits.PARSE + 5000)
    decode_entries(*(dentry(f"d{i}") for i in range(5)))
    with pytest.raises(CorruptData, match="memory"):
        decode_entries(*(dentry(f"d{i}") for i in range(50)))


def test_decode_stops_at_the_chunk_reference_bound(monkeypatch):
    monkeypatch.setattr(limits, "MAX_CHUNK_REFS", 3)
    decode_entries(fentry("a", s=3 * MIN_CHUNK_SIZE, h=SHA_B, c=[SHA_A, SHA_B, SHA_C]))
    with pytest.raises(CorruptData, match="more than 3 chunks"):
        decode_entries(fentry("a", s=3 * MIN_CHUNK_SIZE, h=SHA_B, c=[SHA_A, SHA_B, SHA_C]), fentry("b"))


def test_decode_reads_members_in_any_order_ignores_unknown_ones_and_refuses_one_twice():
    assert decode(zlib.compress(b' { "z" : [1, {"x": null}] ,"e":[ ],\n"v" : 1 } ')) == Manifest()
    with pytest.raises(CorruptData, match="twice"):
        decode(zlib.compress(b'{"v":1,"e":[],"e":[]}'))
    with pytest.raises(CorruptData, match="after its JSON object"):
        decode(zlib.compress(b'{"v":1,"e":[]} {}'))


def test_equal_owners_and_digests_are_held_once_however_many_entries_repeat_them():
    m = decode(blob_of(doc_of(*(fentry(f"f{i}", U="nagios", G="nagios", c=[SHA_A], s=1) for i in range(3)))))
    assert len({id(e.user) for e in m.entries} | {id(e.group) for e in m.entries}) == 1
    assert len({id(e.sha256) for e in m.entries} | {id(e.chunks[0]) for e in m.entries}) == 1


def test_a_path_below_a_file_is_refused_however_deep_it_goes():
    deep = "/".join(["d"] * 100_000)
    assert len(decode_entries(dentry("a"), dentry("a/" + deep)).entries) == 2
    with pytest.raises(CorruptData, match="below the file"):
        decode_entries(fentry("a"), dentry("a/" + deep))
    with pytest.raises(UnsafePath):
        decode_entries(lentry("a"), dentry("a/" + deep))


@FAST
@given(st.lists(st.integers(1, 300), max_size=40), st.integers(0, 30))
def test_a_manifest_fed_in_pieces_of_any_size_decodes_as_it_does_whole(cuts, n):
    m = Manifest(tuple(Entry(f"d{i:03d}/f", FILE, 0o644, 0, 0, i, size=1, sha256=SHA_A, chunks=(SHA_A,),
                             user="u" * (i % 3)) for i in range(n)) + tuple(Entry(f"d{i:03d}", DIR, 0o755, 0, 0, 0)
                                                                       for i in range(n)))
    blob = encode(m)
    decoder = manifest_reader.Decoder()
    pos = 0
    for size in cuts:
        decoder.feed(blob[pos:pos + size])
        pos += size
    decoder.feed(blob[pos:])
    assert decoder.result() == decode(blob) == Manifest(tuple(sorted(m.entries, key=lambda e: e.path)))


def test_load_fetches_a_few_pieces_at_a_time_and_checks_the_whole_digest():
    m = Manifest(tuple(Entry(f"f{i:05d}", FILE, 0o644, 0, 0, i, size=1, sha256=hashlib.sha256(b"%d" % i).hexdigest(),
                             chunks=(hashlib.sha256(b"%d" % i).hexdigest(),)) for i in range(3000)))
    pieces = mf.Encoder().pieces(m, 4096)
    names = tuple(hashlib.sha256(p).hexdigest() for p in pieces)
    store = dict(zip(names, pieces, strict=True))
    asked: list[int] = []

    def fetch(batch):
        asked.append(len(batch))
        return {d: store[d] for d in batch}
    whole = hashlib.sha256(b"".join(pieces)).hexdigest()
    assert manifest_reader.load(names, fetch, whole) == m
    assert len(pieces) > manifest_reader.LOAD_BATCH and max(asked) <= manifest_reader.LOAD_BATCH
    assert manifest_reader.load(names, fetch, SHA_A) is None


def _stream_of(pieces: list[str], max_value: int = 1 << 20) -> tuple[list, dict]:
    items, members = [], {}
    stream = ObjectStream("e", items.append, members.__setitem__, max_value)
    for piece in pieces:
        stream.feed(piece)
    stream.close()
    return items, members


def test_the_object_stream_waits_for_a_number_cut_by_the_end_of_a_piece():
    assert _stream_of(['{"v":1', '0,"e":[1', '2,{"a":', '"b"}]}']) == ([12, {"a": "b"}], {"v": 10})
    assert _stream_of(["{", "}"]) == ([], {})


@pytest.mark.parametrize("text", ['{"e":[1,]}', '{"e":[1 2]}', '{"v":1,}', '{"v":1', '[]', '{"e":[', '{"v":1}x',
                                  '{1:2}', '{"e":[' + "[" * 100_000 + "]" * 100_000 + "]}"])
def test_the_object_stream_refuses_text_that_is_no_json_object(text):
    with pytest.raises(StreamError):
        _stream_of([text[i:i + 7] for i in range(0, len(text), 7)])


def test_an_entry_of_15_000_chunks_decodes_from_small_pieces_and_one_more_chunk_is_refused():
    chunks = [hashlib.sha256(b"%d" % i).hexdigest() for i in range(15_000)]
    entry = fentry("big", s=len(chunks) * MIN_CHUNK_SIZE, h=SHA_A, c=chunks)
    blob = blob_of(doc_of(entry))
    decoder = manifest_reader.Decoder()
    for i in range(0, len(blob), 1024):
        decoder.feed(blob[i:i + 1024])
    assert decoder.result().entries[0].chunks == tuple(chunks)
    with pytest.raises(CorruptData, match="more than"):
        decode(blob_of(doc_of(fentry("big", s=16_000 * MIN_CHUNK_SIZE, h=SHA_A, c=chunks + chunks[:1000]))))
