"""One backoff for every loop that waits after a failure (Patroni's ``utils.Retry`` model).

A pause starts at ``first`` and doubles (``factor``) after each failure in a row, up to
``cap``; a success starts it over. ``attempts`` and ``deadline`` bound a retry that gives
up (``call``); a loop that never gives up (a watch, the mirror) leaves both unset and asks
``pause()`` for each failure. ``jitter`` adds up to that fraction of the pause, at random,
so that many sidecars that lost the same Consul do not come back in step; every loop of
statesync keeps it at 0 today, as its pauses were exact before this module existed and
tests and docs state them (the start-up wait: 0.2 s doubling to 10 s, 8 attempts).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")


def delay(failures: int, first: float, cap: float, factor: float = 2.0) -> float:
    """The pause after ``failures`` failures in a row (1 for the first): ``first * factor**(n-1)``, at most ``cap``."""
    if failures < 1:
        return 0.0
    # Bounded exponent: a loop that fails for days must not overflow a float on its way to the cap.
    return min(cap, first * factor ** min(failures - 1, 64))


@dataclass
class Backoff:
    """The pauses of one loop. Not shared between threads: each loop holds its own."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    attempts: int | None = None  # call(): give up after this many attempts
    deadline: float | None = None  # call(): give up once this many seconds have passed since the first
    clock: Callable[[], float] = time.monotonic
    rand: Callable[[], float] = random.random
    failures: int = field(default=0, init=False)

    def pause(self) -> float:
        """Count one more failure; return the pause to wait before the next attempt."""
        self.failures += 1
        base = delay(self.failures, self.first, self.cap, self.factor)
        return base + base * self.jitter * self.rand() if self.jitter else base

    def reset(self) -> None:
        """A success: the next failure pauses ``first`` again."""
        self.failures = 0

    def call(self, fn: Callable[[], T], retry_on: type[BaseException] | tuple[type[BaseException], ...],
             sleep: Callable[[float], object] = time.sleep,
             announce: Callable[[BaseException, int, float], None] | None = None) -> T:
        """Call ``fn`` until it returns, pausing after each ``retry_on`` failure; re-raise the last
        failure once ``attempts`` are spent or the next pause would end past ``deadline``.
        ``announce(error, attempt, pause)`` is called before each pause, never after it."""
        self.reset()
        started = self.clock()
        while True:
            try:
                return fn()
            except retry_on as exc:
                attempt = self.failures + 1
                if self.attempts is not None and attempt >= self.attempts:
                    raise
                wait = self.pause()
                if self.deadline is not None and self.clock() + wait - started > self.deadline:
                    raise
                if announce is not None:
                    announce(exc, attempt, wait)
                sleep(wait)
