"""When the acceptor's next pass runs (statesync/enrol/settle.py): pure, no clock."""
from __future__ import annotations

import pytest

from statesync.enrol.settle import BOUND, QUIET, wait_more


def test_a_single_change_waits_the_quiet_time_before_its_pass():
    assert wait_more(first=100.0, last=100.0, now=100.0) == QUIET


def test_each_further_change_moves_the_pass_to_a_quiet_time_after_it():
    assert wait_more(first=100.0, last=101.0, now=101.0) == QUIET
    assert wait_more(first=100.0, last=101.0, now=102.5) == pytest.approx(QUIET - 1.5)


def test_the_pass_runs_once_the_changes_have_been_quiet_long_enough():
    assert wait_more(first=100.0, last=101.0, now=101.0 + QUIET) == 0.0
    assert wait_more(first=100.0, last=101.0, now=200.0) == 0.0


def test_changes_that_never_pause_still_get_a_pass_at_the_bound_after_the_first():
    first = 100.0
    assert wait_more(first, last=first + BOUND - 0.1, now=first + BOUND - 0.1) == pytest.approx(0.1)
    assert wait_more(first, last=first + BOUND, now=first + BOUND) == 0.0
    assert wait_more(first, last=first + 3 * BOUND, now=first + 3 * BOUND) == 0.0


def test_the_quiet_time_outlasts_the_request_poll_and_the_bound_a_satellites_retry():
    # A request file appears at the master's next 0.5 s poll; a pending satellite retries every 10 s.
    assert 0.5 < QUIET < BOUND <= 10.0


def test_the_window_can_be_given():
    assert wait_more(0.0, 0.0, 0.0, quiet=0.5, bound=1.0) == 0.5
    assert wait_more(0.0, 0.9, 0.9, quiet=0.5, bound=1.0) == pytest.approx(0.1)
