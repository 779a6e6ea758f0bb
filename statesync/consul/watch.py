"""One way to follow a key or a prefix with Consul's blocking queries (consul-template's
``watch/view.go`` model), for the CA guard, the acceptor and the CA publisher.

``advance`` is the index rule, pure: the first answer is news; an answer at the index waited
on is the wait running out, nothing new; an index that went back (Consul restored from a
snapshot, a dev agent or a whole cluster rebuilt, whose raft indexes start over) starts the
watch over at 0, else the next query would block until the new Consul's index passed the old
one's, and every change until then would go unnoticed; and an index below 1 is taken as 1,
since a query at index 0 does not block and would turn the watch into a hot loop (Consul's
"blocking queries" notes: some versions answered 0).

``Watch`` runs the loop: a failure (Consul away, a refused read, ``on_news`` failing) pauses
by its ``Backoff`` and keeps the index, so the same change is looked at again once Consul
answers; never a hot loop. The queries are Consul's default consistency: they only say when
to look again, and a decider reads consistently before it acts (docs/ARCHITECTURE.md, "Read
consistency").
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import structlog

from ..errors import StatesyncError
from .backoff import Backoff

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds a blocking query waits on Consul before it is asked again (Consul caps it at 10 min).
WAIT_S = 55.0


@dataclass(frozen=True)
class Step:
    index: int  # the index the next query waits on
    news: bool  # the answer moved past the index waited on: look at it


def advance(waited: int, answered: int) -> Step:
    """Where a watch goes after a query at index ``waited`` was answered with index ``answered``."""
    answered = max(answered, 1)
    if answered < waited:
        return Step(0, False)
    if answered == waited:
        return Step(waited, False)
    return Step(answered, True)


class Watch(Generic[T]):
    """Follows one blocking query until ``stop`` is set, calling ``on_news(value, first)`` for each
    answer that is news; ``first`` is the first answer since ``run`` began (not after a reset).

    ``query(index)`` returns ``(index, value)``: ``Store.wait`` or ``Store.wait_prefix`` with the
    key and wait bound (``key_query``, ``prefix_query``). ``retry_on`` are the failures that are
    paused on and retried; anything else ends the loop, as a bug should not be retried silently.

    ``on_quiet(value)`` is called with each answer that is not news (the wait ran out), so that a
    caller can do its periodic work in this thread, on this connection. ``on_trouble(exc)`` is
    called with each failure, and with None at the first answer after failures."""

    def __init__(self, query: Callable[[int], tuple[int, T]], on_news: Callable[[T, bool], None],
                 stop: threading.Event, backoff: Backoff, what: str, key: str, level: str = "warning",
                 retry_on: type[BaseException] | tuple[type[BaseException], ...] = StatesyncError,
                 on_quiet: Callable[[T], None] | None = None, on_trouble: Callable[[BaseException | None], None] | None = None):
        self.query, self.on_news, self.stop = query, on_news, stop
        self.backoff, self.what, self.key, self.level, self.retry_on = backoff, what, key, level, retry_on
        self.on_quiet, self.on_trouble = on_quiet, on_trouble
        self.index = 0
        self.failing = False

    def run(self) -> None:
        first = True
        while not self.stop.is_set():
            try:
                answered, value = self.query(self.index)
                if self.failing and self.on_trouble is not None:
                    self.on_trouble(None)
                self.failing = False
                step = advance(self.index, answered)
                if step.news and not self.stop.is_set():
                    self.on_news(value, first)
                    first = False
                elif self.on_quiet is not None and not self.stop.is_set():
                    self.on_quiet(value)
            except self.retry_on as exc:
                pause = self.backoff.pause()
                error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, StatesyncError) else str(exc)
                self.failing = True
                if self.on_trouble is not None:
                    self.on_trouble(exc)
                getattr(log, self.level)(f"cannot watch {self.what}; retrying", key=self.key, error=error,
                                         retry_in=pause)
                self.stop.wait(pause)
                continue
            self.backoff.reset()
            self.index = step.index


def key_query(store, key: str, wait_s: float = WAIT_S) -> Callable[[int], tuple]:
    """A blocking read of ``key``: ``(index, KVPair or None)``."""
    return lambda index: store.wait(key, index, wait_s)


def prefix_query(store, prefix: str, wait_s: float = WAIT_S) -> Callable[[int], tuple]:
    """A blocking recursive read of ``prefix``: ``(index, [KVPair])``; a deleted key moves the index too."""
    return lambda index: store.wait_prefix(prefix, index, wait_s)
