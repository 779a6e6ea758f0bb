"""The scanner's packed records (tree/records) and the encoder's reuse of segments by token."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import stat

from statesync.snapshot import manifest as mf
from statesync.snapshot import manifest_reader
from statesync.tree import records, scan
from statesync.tree.fileinfo import file_id, inode, signature
from statesync.tree.globs import PathFilter
from statesync.tree.scan import Scanner


def _entry(i: int, **changes) -> mf.Entry:
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    e = mf.Entry(f"conf.d/object{i:05d}.conf", mf.FILE, 0o644, 1000, 1001, 1_700_000_000_123_456_789 + i,
                 size=300 + i, sha256=digest, chunks=(digest,), user="nagios", group="icinga")
    return dataclasses.replace(e, **changes)


def test_a_record_gives_back_the_entry_it_was_packed_from_and_keeps_the_signature_readable(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    st = os.stat(path)
    sig = signature(st)
    owners = records.Owners()
    for i, settled in ((0, True), (1, False), (2, True)):
        e = _entry(i, user="" if i == 2 else "nagios", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid,
                   mtime_ns=st.st_mtime_ns, size=st.st_size)
        rec = records.pack(sig, settled, e, owners)
        assert records.unpack(e.path, rec, owners) == e
        assert records.unpack(e.path, rec, owners).sha256 is e.sha256  # shared, not a copy per manifest
        assert records.settled(rec) is settled
        assert records.same_signature(rec, sig) and inode(rec[0]) == st.st_ino and file_id(rec[0]) == file_id(sig)
    assert owners.names == [("nagios", "icinga"), ("", "icinga")]
    path.write_text("xy")
    assert not records.same_signature(rec, signature(os.stat(path)))


def test_an_entry_whose_fields_are_not_its_signature_s_is_not_packed(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    st = os.stat(path)
    e = _entry(0, mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns, size=st.st_size)
    assert records.pack(signature(st), True, e, records.Owners()) is not None
    for change in ({"size": 2}, {"mtime_ns": st.st_mtime_ns + 1}, {"mode": 0o600 if e.mode != 0o600 else 0o644},
                   {"uid": st.st_uid + 1}, {"gid": st.st_gid + 1}):
        assert records.pack(signature(st), True, dataclasses.replace(e, **change), records.Owners()) is None, change


def test_only_a_plain_file_of_one_chunk_named_by_its_sha256_is_packed():
    assert records.packable(_entry(0))
    other = hashlib.sha256(b"other").hexdigest()
    for e in (_entry(0, sealed=True), _entry(0, link="conf.d/a"), _entry(0, chunks=(_entry(0).sha256, other)),
              _entry(0, chunks=(other,)), _entry(0, sha256="ABC", chunks=("ABC",)),
              mf.Entry("d", mf.DIR, 0o755, 0, 0, 1), mf.Entry("l", mf.SYMLINK, 0o777, 0, 0, 1, target="x")):
        assert not records.packable(e), e


def test_the_encoder_reuses_a_segment_whose_tokens_are_the_same_even_when_its_entries_are_new_objects():
    entries = [_entry(i) for i in range(10_000)]
    tokens = [object() for _ in entries]
    enc = mf.Encoder()
    first = enc.pieces(mf.Manifest(tuple(entries), None, tuple(tokens)), 256 * 1024)
    assert b"".join(first) == mf.encode(mf.Manifest(tuple(entries)))
    rebuilt = [dataclasses.replace(e) for e in entries]  # equal entries, new objects
    rebuilt[4321] = _entry(4321, mtime_ns=1)
    tokens[4321] = object()
    second = enc.pieces(mf.Manifest(tuple(rebuilt), None, tuple(tokens)), 256 * 1024)
    assert b"".join(second) == mf.encode(mf.Manifest(tuple(rebuilt)))
    assert manifest_reader.decode(b"".join(second)).by_path()[rebuilt[4321].path].mtime_ns == 1
    assert len(set(second) - set(first)) <= 2


def test_a_manifest_without_tokens_or_out_of_order_is_encoded_by_its_entries():
    entries = [_entry(i) for i in range(3000)]
    enc = mf.Encoder()
    enc.pieces(mf.Manifest(tuple(entries), None, tuple(entries)), 16 * 1024)
    changed = list(entries)
    changed[7] = _entry(7, size=1)
    assert b"".join(enc.pieces(mf.Manifest(tuple(changed)), 16 * 1024)) == mf.encode(mf.Manifest(tuple(changed)))
    shuffled = tuple(reversed(changed))
    assert (b"".join(enc.pieces(mf.Manifest(shuffled, None, tuple(entries)), 16 * 1024))
            == mf.encode(mf.Manifest(tuple(changed))))


def test_a_scanner_s_records_give_the_entries_of_a_fresh_scan_and_see_each_change(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "RACY_NS", 0)  # trust any stat older than the scan: no second read of each
    root = tmp_path / "root"
    (root / "conf.d").mkdir(parents=True)
    for i in range(50):
        (root / f"conf.d/o{i:02d}.conf").write_text(f"object {i}\n")
    scanner = Scanner(root, PathFilter(), 1 << 20)
    first = scanner.scan(set()).manifest
    assert sum(len(item) == 2 for item in scanner._entries.values()) == 50  # each file a record
    again = scanner.scan(set())
    assert again.files_read == 0 and again.manifest == first
    (root / "conf.d/o07.conf").write_text("object 7 changed\n")
    changed = scanner.scan(set(), dirty=["conf.d/o07.conf"])
    assert changed.files_read == 1
    assert changed.manifest == Scanner(root, PathFilter(), 1 << 20).scan(set()).manifest
    assert changed.manifest.by_path()["conf.d/o07.conf"].sha256 == hashlib.sha256(b"object 7 changed\n").hexdigest()


def _mixed_tree(root):
    """Records (plain files), a directory, a symlink, a hard link and a multi-chunk file."""
    (root / "conf.d").mkdir(parents=True)
    for i in range(40):
        (root / f"conf.d/o{i:02d}.conf").write_text(f"object {i}\n")
    (root / "conf.d/big.bin").write_bytes(os.urandom(10_000))  # three chunks of 4 KiB
    os.symlink("o01.conf", root / "conf.d/link")
    os.link(root / "conf.d/o02.conf", root / "conf.d/o02-hard.conf")
    (root / "empty").mkdir()


def test_a_scan_s_entries_are_built_on_demand_and_equal_the_tuple_of_the_same_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "RACY_NS", 0)
    root = tmp_path / "root"
    _mixed_tree(root)
    m = Scanner(root, PathFilter(), 4096).scan(set()).manifest
    entries = m.entries
    assert isinstance(entries, mf.Entries)
    whole = tuple(entries)
    assert len(entries) == len(whole) == 45
    assert entries == whole and whole == entries and list(entries) == list(whole)
    assert entries[3] == whole[3] and entries[-1] == whole[-1] and entries[5:9] == whole[5:9]
    assert isinstance(entries[5:9], tuple) and hash(entries) == hash(whole)
    assert entries[4] is not entries[4]  # built when asked for, never held
    assert m == mf.Manifest(whole, m.root)
    assert [(e.path, e.link) for e in whole if e.link] == [("conf.d/o02.conf", "conf.d/o02-hard.conf")]


def test_a_scan_s_counts_chunks_and_lookups_are_those_of_its_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "RACY_NS", 0)
    root = tmp_path / "root"
    _mixed_tree(root)
    m = Scanner(root, PathFilter(), 4096).scan(set()).manifest
    plain = mf.Manifest(tuple(m.entries), m.root)
    assert m.tally == plain.tally == mf.Tally(files=42, bytes=plain.total_bytes, dirs=2, symlinks=1, sealed=False)
    assert (m.file_count, m.total_bytes) == (plain.file_count, plain.total_bytes)
    assert m.chunk_refs() == plain.chunk_refs() and len(m.chunk_refs()) == 40 + 3  # o02 and its hard link share one
    asked = ("conf.d/o07.conf", "conf.d/link", "empty", "conf.d", "absent", "conf.d/o07.con", "")
    assert m.find(*asked) == plain.find(*asked) and set(m.find(*asked)) == {"conf.d/o07.conf", "conf.d/link",
                                                                          "empty", "conf.d"}
    assert mf.encode(m) == mf.encode(plain)
