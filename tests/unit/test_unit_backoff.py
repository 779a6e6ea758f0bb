"""One backoff for every loop that waits after a failure: the pauses, the reset, the bounds."""
from __future__ import annotations

import pytest

from statesync.consul.backoff import Backoff, delay
from statesync.errors import ConsulUnavailable


def test_pauses_double_from_the_first_up_to_the_cap():
    b = Backoff(0.25, 5.0)
    assert [b.pause() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_success_starts_the_pauses_over():
    b = Backoff(4.0, 60.0)
    assert [b.pause() for _ in range(6)] == [4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    b.reset()
    assert b.pause() == 4.0


def test_the_pause_of_a_loop_failing_for_days_stays_at_the_cap():
    assert delay(10_000, 0.5, 30.0) == 30.0
    assert delay(0, 0.5, 30.0) == 0.0


def test_jitter_adds_at_most_its_fraction_of_the_pause():
    low, high = Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 0.0), Backoff(1.0, 8.0, jitter=0.5, rand=lambda: 1.0)
    assert [low.pause() for _ in range(3)] == [1.0, 2.0, 4.0]
    assert [round(high.pause(), 3) for _ in range(3)] == [1.5, 3.0, 6.0]


def _failing(times: int, error=ConsulUnavailable):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise error(f"down ({len(calls)})")
        return "done"
    return fn, calls


def test_call_retries_until_the_call_succeeds_announcing_each_pause_before_it():
    fn, calls = _failing(2)
    events = []
    out = Backoff(0.2, 10.0, attempts=8).call(fn, ConsulUnavailable, sleep=lambda s: events.append(("sleep", s)),
                                              announce=lambda e, n, p: events.append(("announce", str(e), n, p)))
    assert out == "done" and len(calls) == 3
    assert events == [("announce", "down (1)", 1, 0.2), ("sleep", 0.2), ("announce", "down (2)", 2, 0.4),
                      ("sleep", 0.4)]


def test_call_gives_up_after_its_attempts_with_the_last_failure():
    fn, calls = _failing(100)
    slept = []
    with pytest.raises(ConsulUnavailable, match=r"down \(8\)"):
        Backoff(0.2, 10.0, attempts=8).call(fn, ConsulUnavailable, sleep=slept.append)
    assert len(calls) == 8
    assert slept == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0]  # the start-up wait: 7 pauses between 8 attempts


def test_call_gives_up_before_a_pause_that_would_end_past_its_deadline():
    now = [0.0]
    fn, calls = _failing(100)
    with pytest.raises(ConsulUnavailable):
        Backoff(1.0, 10.0, deadline=5.0, clock=lambda: now[0]).call(
            fn, ConsulUnavailable, sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert len(calls) == 3  # pauses 1 and 2 end at 3 s; the next, 4 s, would end at 7 s


def test_call_lets_any_other_failure_through_at_once():
    fn, calls = _failing(1, error=ValueError)
    with pytest.raises(ValueError):
        Backoff(0.2, 10.0, attempts=8).call(fn, ConsulUnavailable, sleep=lambda s: None)
    assert len(calls) == 1
