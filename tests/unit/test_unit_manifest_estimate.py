"""The decoder's memory estimate (snapshot/limits.py) admits what a real Icinga 2 master holds:
300,000 objects created through the API, each a file of its own under
api/packages/_api/<stage>/conf.d/<type>s/ (paths of about 100 bytes)."""
from __future__ import annotations

import hashlib

from statesync.snapshot import limits, manifest_reader
from statesync.snapshot import manifest as mf

STAGE = "api/packages/_api/statesync-1764547200-1/conf.d"


def _api_objects(n: int) -> mf.Manifest:
    entries = []
    for k in range(n):
        digest = hashlib.sha256(b"%d" % k).hexdigest()
        host = f"host-{k // 5:06d}.example.com"
        entries.append(mf.Entry(f"{STAGE}/services/{host}%21service{k % 5}.conf", "f", 0o640, 110, 118,
                                1_764_547_200_123_456_789 + k, size=300 + k % 100, sha256=digest, chunks=(digest,),
                                user="nagios", group="nagios"))
    return mf.Manifest(tuple(entries))


def _tally(manifest: mf.Manifest) -> limits.Tally:
    decoder = manifest_reader.Decoder()
    decoder.feed(mf.encode(manifest))
    assert decoder.result() == manifest
    return decoder.tally


def test_the_estimate_admits_300_000_api_objects_with_room_to_spare():
    # Before issue 26.4 such a tree cost 699 bytes an entry in the estimate (a sort's key for
    # every path and a table place for every digest): 278,752 were refused (the whole 300,000:
    # tests/integration/test_manifest_bounds.py).
    n = 3_000
    tally = _tally(_api_objects(n))
    per_entry = tally.kept / n
    assert not tally.needs_sort  # stored in path order, which is tree order here: never sorted
    assert 300_000 * per_entry + limits.PARSE + limits.MAX_VALUES * limits.PER_VALUE <= 0.97 * limits.MAX_ENTRY_MEMORY, per_entry


def test_entries_out_of_tree_order_count_their_sort_and_the_table_of_values_stays_bounded():
    in_order = _tally(_api_objects(5_000))
    entries = list(_api_objects(5_000).entries)
    # A name that sorts below "/" beside a directory of the same name: restore sorts them all.
    entries.append(mf.Entry(f"{STAGE}-old", "f", 0o640, 0, 0, 1, sha256=hashlib.sha256(b"").hexdigest()))
    entries.sort(key=lambda e: e.path)
    shuffled = _tally(mf.Manifest(tuple(entries)))
    assert shuffled.needs_sort and not in_order.needs_sort
    assert in_order.memory == in_order.kept + in_order.table + limits.PARSE
    assert shuffled.memory == shuffled.kept + max(shuffled.sort, shuffled.table + limits.PARSE)
    assert in_order.table <= limits.MAX_VALUES * limits.PER_VALUE
