"""The retention rules, pure: which snapshot ids survive and why."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from statesync.errors import CorruptData
from statesync.snapshot import record
from statesync.snapshot.layout import Layout
from statesync.snapshot.retention import Rules, Snap, decide, decode_pins, encode_pins, id_time, to_forget

T0 = datetime(2026, 11, 23, 23, 0, 0, tzinfo=timezone.utc)
CA_A, CA_B = "a" * 64, "b" * 64


def sid(at: datetime, tail: str = "000000") -> str:
    return at.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + tail


def every(minutes: float, count: int, start: datetime = T0, ca: str = "") -> list[Snap]:
    return [Snap(sid(start + timedelta(minutes=minutes * i)), ca) for i in range(count)]


def kept(snaps, rules, pinned=(), head=""):
    return {s for s, why in decide(snaps, rules, pinned, head).items() if why}


def test_the_id_carries_its_creation_time():
    assert id_time("20261123T234407.123456Z-1a2b3c") == datetime(2026, 11, 23, 23, 44, 7, 123456, tzinfo=timezone.utc)
    assert id_time(record.new_id(T0)) == T0


def test_keep_alone_keeps_the_newest_by_count_like_the_old_rule():
    snaps = every(5, 20)
    ids = [s.id for s in snaps]
    assert kept(snaps, Rules(keep=3)) == set(ids[-3:])
    assert sorted(to_forget(snaps, Rules(keep=3))) == sorted(record.to_prune(ids, 3, set()))


def test_keep_within_keeps_what_is_younger_than_the_window_before_the_newest_snapshot():
    snaps = every(5, 20)  # newest at T0 + 95 min
    reasons = decide(snaps, Rules(keep=1, within=30 * 60))
    # 30 minutes before the newest is not within (restic's strict "after")
    assert [s.id for s in snaps if "within" in reasons[s.id]] == [s.id for s in snaps[-6:]]
    assert "within" not in reasons[snaps[-7].id]


def test_keep_within_measures_from_the_newest_snapshot_so_a_stopped_node_keeps_its_history():
    snaps = every(5, 12, start=T0 - timedelta(days=400))
    assert kept(snaps, Rules(keep=1, within=3600)) == {s.id for s in snaps}


def test_keep_hourly_keeps_the_newest_of_each_of_the_last_distinct_hours():
    snaps = every(5, 36)  # 23:00 .. 01:55, three hours
    reasons = decide(snaps, Rules(keep=1, hourly=2))
    hourly = [s.id for s in snaps if "hourly" in reasons[s.id]]
    assert hourly == [sid(T0 + timedelta(minutes=115)), sid(T0 + timedelta(minutes=175))]


def test_hour_buckets_split_at_the_full_hour_exactly():
    last_of_hour = Snap(sid(T0 + timedelta(minutes=59, seconds=59, microseconds=999999)))
    first_of_next = Snap(sid(T0 + timedelta(hours=1)))
    reasons = decide([last_of_hour, first_of_next], Rules(keep=0, hourly=2))
    assert reasons == {last_of_hour.id: ("hourly",), first_of_next.id: ("hourly",)}


def test_keep_hourly_counts_hours_with_snapshots_not_hours_of_the_clock():
    snaps = [Snap(sid(T0)), Snap(sid(T0 + timedelta(hours=10))), Snap(sid(T0 + timedelta(hours=10, minutes=5)))]
    assert kept(snaps, Rules(keep=0, hourly=2)) == {snaps[0].id, snaps[2].id}


def test_day_buckets_are_utc_days():
    before_midnight = Snap(sid(datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=timezone.utc)))
    after_midnight = Snap(sid(datetime(2026, 11, 24, 0, 0, 0, tzinfo=timezone.utc)))
    same_day = Snap(sid(datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)))
    reasons = decide([same_day, before_midnight, after_midnight], Rules(keep=0, daily=7))
    assert reasons == {same_day.id: (), before_midnight.id: ("daily",), after_midnight.id: ("daily",)}


def test_keep_daily_keeps_only_the_last_distinct_days():
    snaps = [Snap(sid(T0 + timedelta(days=d))) for d in range(10)]
    assert kept(snaps, Rules(keep=0, daily=3)) == {s.id for s in snaps[-3:]}


def test_a_wrong_ca_published_many_times_cannot_push_the_last_good_ca_snapshot_out():
    good = every(5, 4, ca=CA_A)
    wrong = every(5, 50, start=T0 + timedelta(hours=1), ca=CA_B)
    reasons = decide(good + wrong, Rules(keep=2))
    assert reasons[good[-1].id] == ("ca",)
    assert all(reasons[s.id] == () for s in good[:-1])
    assert kept(good + wrong, Rules(keep=2)) == {good[-1].id, wrong[-2].id, wrong[-1].id}


def test_snapshots_of_unknown_ca_get_no_ca_reason():
    old = every(5, 5)  # records from before the CA identity was recorded
    new = every(5, 5, start=T0 + timedelta(hours=1), ca=CA_A)
    assert kept(old + new, Rules(keep=1)) == {new[-1].id}


def test_a_pinned_snapshot_survives_every_rule():
    snaps = every(5, 30)
    pin = snaps[3].id
    assert decide(snaps, Rules(keep=1), pinned={pin})[pin] == ("pinned",)
    assert pin not in to_forget(snaps, Rules(keep=1), pinned=[pin])


def test_the_head_is_never_pruned_even_when_no_rule_keeps_it():
    snaps = every(5, 10)
    head = snaps[0].id  # an older snapshot named by the head (e.g. put back after damage)
    assert decide(snaps, Rules(keep=0), head=head)[head] == ("head",)
    assert to_forget(snaps, Rules(keep=0), head=head) == [s.id for s in reversed(snaps[1:])]


def test_rules_combine_and_each_survivor_lists_every_reason_in_order():
    snaps = every(5, 24, ca=CA_A)  # two hours
    newest = snaps[-1].id
    reasons = decide(snaps, Rules(keep=2, within=600, hourly=2, daily=1), pinned={newest}, head=newest)
    assert reasons[newest] == ("last", "within", "hourly", "daily", "ca", "pinned", "head")
    assert reasons[snaps[-2].id] == ("last", "within")
    assert reasons[snaps[11].id] == ("hourly",)
    assert sum(1 for why in reasons.values() if why) == 3


def test_no_snapshots_decide_nothing():
    assert decide([], Rules(keep=3, within=60, hourly=1, daily=1), pinned={"x"}, head="y") == {}


def test_pins_round_trip_and_a_damaged_document_is_refused():
    ids = [sid(T0), sid(T0 + timedelta(hours=1))]
    assert decode_pins(encode_pins(ids + ids[:1])) == ids
    assert decode_pins(None) == []
    for bad in (b"[", b"[]", b'{"v":2,"pinned":[]}', b'{"v":1,"pinned":["../head"]}', b'{"v":1}'):
        with pytest.raises(CorruptData):
            decode_pins(bad)


def test_pins_live_under_the_node():
    assert Layout("p", "n1").pins == "p/nodes/n1/pins"


def _rec(**meta) -> record.Record:
    return record.Record(id=sid(T0), node="n1", created="x", files=1, dirs=0, symlinks=0, bytes=1,
                         manifest_chunks=("c" * 64,), manifest_sha256="d" * 64, manifest_size=1, meta=meta)


def test_the_ca_identity_round_trips_through_the_record():
    rec = _rec(role="master", ca_spki_sha256=CA_A)
    assert record.decode(rec.encode()).ca == CA_A
    assert _rec().ca == "" and _rec(ca_spki_sha256="not hex").ca == ""


def test_the_ca_identity_adds_no_top_level_key_that_an_older_decoder_would_refuse():
    doc = json.loads(_rec(ca_spki_sha256=CA_A).encode())
    assert set(doc) == set(json.loads(_rec().encode()))
    assert doc["v"] == 1 and doc["meta"] == {"ca_spki_sha256": CA_A}


def test_a_record_without_the_ca_identity_decodes_as_unknown_ca():
    old = json.loads(_rec().encode())
    del old["meta"]
    assert record.decode(json.dumps(old).encode()).ca == ""
