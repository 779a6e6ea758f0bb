"""The chunks of every kept snapshot, held as one whole set and deltas (repo/refsets.py)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.repo.refsets import RefSets

_snapshots = st.lists(st.frozensets(st.integers(0, 30).map(str), max_size=20), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_snapshots, st.lists(st.integers(0, 7), max_size=12))
def test_every_snapshot_s_chunks_come_back_exact_whichever_snapshot_is_held_whole(sets, order):
    truth = {f"s{i}": refs for i, refs in enumerate(sets)}
    held = RefSets()
    loads: list[str] = []

    def load(sid):
        loads.append(sid)
        return truth[sid]

    assert held.union(truth, load) == set().union(*truth.values())
    for i in order:
        sid = f"s{i % len(sets)}"
        assert held.get(sid, lambda sid=sid: load(sid)) == truth[sid]
        assert held.union(truth, load) == set().union(*truth.values())
        some = list(truth)[: 1 + i % len(truth)]
        assert held.union(some, load) == set().union(*(truth[s] for s in some))
    assert sorted(loads) == sorted(truth)  # each read once, however often asked


def test_a_snapshot_forgotten_is_read_again_when_asked_for():
    held, loads = RefSets(), []
    held.set_whole("head", frozenset({"a", "b"}))
    assert held.union(["head", "old"], lambda sid: loads.append(sid) or frozenset({"b", "c"})) == {"a", "b", "c"}
    held.keep({"head"})
    assert held.union(["old"], lambda sid: loads.append(sid) or frozenset({"b", "c"})) == {"b", "c"}
    assert loads == ["old", "old"]
