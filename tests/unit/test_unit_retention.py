"""The retention rules and commit order, pure: which snapshot ids survive and why, whatever their clocks say."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from statesync.errors import CorruptData
from statesync.snapshot import history, record
from statesync.snapshot.keep_rules import Rules, Snap, decide, decode_pins, encode_pins, id_time, to_forget
from statesync.snapshot.layout import Layout

T0 = datetime(2026, 11, 23, 23, 0, 0, tzinfo=timezone.utc)
CA_A, CA_B = "a" * 64, "b" * 64


def sid(at: datetime, tail: str = "000000") -> str:
    return at.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + tail


def honest(at: datetime, ca: str = "") -> Snap:
    """A snapshot committed at ``at`` by a writer whose clock was right: its sequence number
    follows the time (microseconds after 2020)."""
    return Snap(sid(at), ca, seq=int((at - datetime(2020, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1)))


def every(minutes: float, count: int, start: datetime = T0, ca: str = "") -> list[Snap]:
    return [honest(start + timedelta(minutes=minutes * i), ca) for i in range(count)]


def chain(*clocks: datetime, ca: str = "") -> list[Snap]:
    """Snapshots committed in the order given, each on the previous one, whatever clock each carries."""
    out: list[Snap] = []
    for n, at in enumerate(clocks):
        out.append(Snap(sid(at, f"{n:06x}"), ca, parent=out[-1].id if out else "", seq=n + 1))
    return out


def kept(snaps, rules, pinned=(), head=""):
    return {s for s, why in decide(snaps, rules, pinned, head).items() if why}


def test_the_id_carries_its_creation_time():
    assert id_time("20261123T234407.123456Z-1a2b3c") == datetime(2026, 11, 23, 23, 44, 7, 123456, tzinfo=timezone.utc)
    assert id_time(record.new_id(T0)) == T0


def test_keep_alone_keeps_the_newest_by_count_like_the_old_rule():
    snaps = every(5, 20)
    ids = [s.id for s in snaps]
    assert kept(snaps, Rules(keep=3)) == set(ids[-3:])
    assert to_forget(snaps, Rules(keep=3)) == list(reversed(ids[:-3]))


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
    last_of_hour = honest(T0 + timedelta(minutes=59, seconds=59, microseconds=999999))
    first_of_next = honest(T0 + timedelta(hours=1))
    reasons = decide([last_of_hour, first_of_next], Rules(keep=0, hourly=2))
    assert reasons == {last_of_hour.id: ("hourly",), first_of_next.id: ("hourly",)}


def test_keep_hourly_counts_hours_with_snapshots_not_hours_of_the_clock():
    snaps = [honest(T0), honest(T0 + timedelta(hours=10)), honest(T0 + timedelta(hours=10, minutes=5))]
    assert kept(snaps, Rules(keep=0, hourly=2)) == {snaps[0].id, snaps[2].id}


def test_day_buckets_are_utc_days():
    before_midnight = honest(datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=timezone.utc))
    after_midnight = honest(datetime(2026, 11, 24, 0, 0, 0, tzinfo=timezone.utc))
    same_day = honest(datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc))
    reasons = decide([same_day, before_midnight, after_midnight], Rules(keep=0, daily=7))
    assert reasons == {same_day.id: (), before_midnight.id: ("daily",), after_midnight.id: ("daily",)}


def test_keep_daily_keeps_only_the_last_distinct_days():
    snaps = [honest(T0 + timedelta(days=d)) for d in range(10)]
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
    assert record.decode_record(rec.encode()).ca == CA_A
    assert _rec().ca == "" and _rec(ca_spki_sha256="not hex").ca == ""


def test_the_ca_identity_adds_no_top_level_key_that_an_older_decoder_would_refuse():
    doc = json.loads(_rec(ca_spki_sha256=CA_A).encode())
    assert set(doc) == set(json.loads(_rec().encode()))
    assert doc["v"] == 1 and doc["meta"] == {"ca_spki_sha256": CA_A}


def test_a_record_without_the_ca_identity_decodes_as_unknown_ca():
    old = json.loads(_rec().encode())
    del old["meta"]
    assert record.decode_record(json.dumps(old).encode()).ca == ""


# === commit order, not clock order ====================================================

YEAR = timedelta(days=365)


def test_ten_snapshots_from_a_clock_four_years_ahead_give_their_keep_slots_up_to_the_commits_after_them():
    before = chain(*(T0 + timedelta(minutes=i) for i in range(5)))
    ahead = chain(*(T0 + 4 * YEAR + timedelta(minutes=10 + i) for i in range(10)))
    after = chain(*(T0 + timedelta(minutes=30 + i) for i in range(3)))
    snaps = _linked(before, ahead, after)
    reasons = decide(snaps, Rules(keep=10), head=snaps[-1].id)
    assert [s.id for s in snaps if "last" in reasons[s.id]] == [s.id for s in snaps[-10:]]
    assert all("last" in reasons[s.id] for s in snaps[-3:])  # the real ones after the skewed ones
    more = _linked(snaps, chain(*(T0 + timedelta(minutes=40 + i) for i in range(10))))
    assert kept(more, Rules(keep=10), head=more[-1].id) == {s.id for s in more[-10:]}


def test_one_snapshot_from_400_days_ahead_leaves_keep_within_keeping_the_last_minutes():
    snaps = chain(T0 - timedelta(days=2), T0 - timedelta(hours=1), T0 + timedelta(days=400),
                  T0 + timedelta(minutes=1), T0 + timedelta(minutes=2))
    reasons = decide(snaps, Rules(keep=1, within=86400), head=snaps[-1].id)
    assert [s.id for s in snaps if "within" in reasons[s.id]] == [s.id for s in snaps[1:]]
    assert reasons[snaps[0].id] == ()


def test_a_newest_commit_400_days_ahead_does_not_age_the_minutes_before_it_out_of_keep_within():
    snaps = chain(T0 - timedelta(days=2), T0 - timedelta(hours=1), T0 - timedelta(minutes=1),
                  T0 + timedelta(days=400))
    reasons = decide(snaps, Rules(keep=1, within=86400), head=snaps[-1].id)
    assert [s.id for s in snaps if "within" in reasons[s.id]] == [s.id for s in snaps[1:]]
    after = _linked(snaps, chain(T0 + timedelta(minutes=1)))
    assert kept(after, Rules(keep=1, within=86400)) == {s.id for s in after[1:]}


def test_a_node_back_after_a_long_stop_keeps_the_window_before_the_stop_until_its_next_commit():
    snaps = every(5, 6, start=T0 - timedelta(days=30)) + every(5, 1)
    assert kept(snaps, Rules(keep=1, within=3600)) == {s.id for s in snaps}
    snaps += every(5, 1, start=T0 + timedelta(minutes=5))
    assert kept(snaps, Rules(keep=1, within=3600)) == {s.id for s in snaps[-2:]}


def test_a_snapshot_from_the_future_counts_as_taken_when_the_next_commit_after_it_was():
    snaps = chain(T0, T0 + 4 * YEAR, T0 + 4 * YEAR + timedelta(hours=1), T0 + timedelta(minutes=5),
                  T0 + timedelta(minutes=9))
    times = history.trusted_times(list(reversed(snaps)))
    assert [times[s.id] for s in snaps] == [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=5),
                                            T0 + timedelta(minutes=5), T0 + timedelta(minutes=9)]


def test_a_newest_commit_whose_clock_runs_behind_does_not_fold_the_days_before_it_into_one():
    days = chain(*(T0 + timedelta(days=d) for d in range(7)), T0 - 4 * YEAR)
    reasons = decide(days, Rules(keep=0, within=3600, daily=8))
    assert all("daily" in reasons[s.id] for s in days)
    assert all("within" in reasons[s.id] for s in days)  # measured from a clock behind them all: kept


def test_a_commit_whose_clock_runs_behind_costs_the_commits_before_it_nothing_under_keep_within():
    snaps = chain(T0, T0 + timedelta(minutes=1), T0 - 4 * YEAR, T0 + timedelta(minutes=2), T0 + timedelta(minutes=3))
    reasons = decide(snaps, Rules(keep=0, within=3600))
    assert [s.id for s in snaps if reasons[s.id]] == [snaps[0].id, snaps[1].id, snaps[3].id, snaps[4].id]


def test_commit_order_follows_the_parent_chain_and_sequence_not_the_clock_in_the_ids():
    snaps = chain(T0 + 4 * YEAR, T0, T0 - YEAR, T0 + timedelta(days=3))
    assert history.newest_first(reversed(snaps)) == list(reversed(snaps))
    assert history.newest_first(snaps[::2] + snaps[1::2])[0] == snaps[-1]  # the head lost: the chain's end
    unlinked = [Snap(s.id, seq=s.seq) for s in snaps]  # the parents pruned long ago
    assert history.newest_first(unlinked) == list(reversed(unlinked))


def test_records_from_before_the_sequence_number_are_placed_by_their_consul_index_and_come_first():
    old = [Snap(sid(T0 + 4 * YEAR, "aaaaaa"), index=50), Snap(sid(T0, "bbbbbb"), index=70)]
    new = [Snap(sid(T0 - YEAR, "cccccc"), seq=1), Snap(sid(T0 - 2 * YEAR, "dddddd"), seq=2)]
    assert [s.id[-6:] for s in history.newest_first(old + new)] == ["dddddd", "cccccc", "bbbbbb", "aaaaaa"]


def test_the_head_and_its_parent_chain_are_newest_even_when_an_older_writer_left_no_sequence_number():
    seqd = chain(T0, T0 + timedelta(minutes=1))
    downgraded = Snap(sid(T0 - YEAR, "eeeeee"), parent=seqd[-1].id, index=10)  # written by an older statesync
    assert history.newest_first(seqd + [downgraded], head=downgraded.id) == [downgraded, *reversed(seqd)]
    assert history.newest_first(seqd + [downgraded])[0] == downgraded


def test_a_damaged_history_with_parent_links_in_a_cycle_still_orders_every_record():
    a = Snap(sid(T0, "aaaaaa"), parent=sid(T0, "bbbbbb"), seq=1)
    b = Snap(sid(T0, "bbbbbb"), parent=a.id, seq=2)
    assert history.newest_first([a, b]) == [b, a]


def test_the_next_sequence_number_is_above_every_record_seen():
    assert history.next_seq([]) == 1
    assert history.next_seq([Snap("x", seq=4), Snap("y", index=900), Snap("z", seq=2)]) == 5


def test_the_sequence_number_rides_in_meta_and_a_record_without_one_has_none():
    assert record.decode_record(_rec(seq=7).encode()).seq == 7
    doc = json.loads(_rec(seq=7).encode())
    assert doc["v"] == 1 and set(doc) == set(json.loads(_rec().encode()))
    for bad in (0, -1, True, "7", 1.5):
        assert _rec(seq=bad).seq == 0
    assert _rec().seq == 0


def _linked(*runs: list[Snap]) -> list[Snap]:
    """The runs committed one after the other: each run's first snapshot on the previous run's last."""
    out: list[Snap] = []
    for run in runs:
        for s in run:
            out.append(Snap(s.id, s.ca, parent=out[-1].id if out else "", seq=len(out) + 1))
    return out
