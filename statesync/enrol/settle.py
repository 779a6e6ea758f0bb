"""When the acceptor's next pass runs: after a burst of changes has settled, within a bound.

Every pass that changes the accepted set stages it, and every stage makes Icinga 2 reload and
drop all cluster connections for seconds. A fleet's registrations and requests do not arrive in
one instant: sidecars write over seconds, and the request files appear as each satellite's
Icinga 2 connects. A pass that starts at the first of them stages a few, and the rest make a
stage each pass. So a pass waits until the changes have been ``QUIET`` for a moment, and never
longer than ``BOUND`` after the first: everything that arrived together goes into one pass, one
stage and one reload, and a stream that never pauses (Icinga rewrites a pending request file at
every retry, every 10 s per satellite) still gets a pass every ``BOUND`` seconds.

Pure: the caller passes the monotonic times.
"""
from __future__ import annotations

QUIET = 2.0  # seconds without a change before a pass: longer than the 0.5 s request poll
BOUND = 10.0  # seconds after the first change at most: a satellite retries its request every 10 s


def wait_more(first: float, last: float, now: float, quiet: float = QUIET, bound: float = BOUND) -> float:
    """Seconds the pass should still wait, given the first and the latest change of this burst
    (0.0: run it now). Never more than ``bound`` after ``first``, whatever keeps arriving."""
    return max(0.0, min(last + quiet, first + bound) - now)
