"""How often a path may be committed (the setting ``min_interval``). Pure: the caller says what
changed and when, and asks what may go now and when the rest may.

A paced path's first change goes at once; a later one waits until the interval since that
path's last commit has passed, and then goes even if nothing else changes. A change below an
urgent directory (the CA, the certificates) goes at once and takes everything waiting along:
a satellite must never wait for a certificate because the state file was dumped.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..tree.globs import compile_pattern


class Pacer:
    """Per-path minimum commit intervals; times are the caller's clock (monotonic seconds)."""

    def __init__(self, rules: tuple[tuple[str, float], ...] = (), urgent: tuple[str, ...] = ()):
        self._rules = tuple((compile_pattern(p), float(s)) for p, s in rules if s > 0)
        self._urgent = tuple(d.rstrip("/") for d in urgent if d.strip("/"))
        self._last: dict[str, float] = {}
        # paced paths with a change not committed yet, and when they may be
        self._waiting: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return bool(self._rules)

    def interval(self, path: str) -> float:
        """The first matching rule's seconds; 0 for a path no rule paces."""
        return next((s for r, s in self._rules if r.match(path)), 0.0)

    def urgent(self, path: str) -> bool:
        return any(path == d or path.startswith(d + "/") for d in self._urgent)

    def hold(self, changed: Iterable[str], now: float) -> set[str]:
        """Of the ``changed`` paths, those that must wait (remembered until they are due); none
        when an urgent path is among them."""
        changed = set(changed)
        if not self.active or any(self.urgent(p) for p in changed):
            return set()
        held = set()
        for path in changed:
            last, interval = self._last.get(path), self.interval(path)
            if interval and last is not None and now - last < interval:
                held.add(path)
                self._waiting[path] = last + interval
        return held

    def split(self, burst: Iterable[str], now: float) -> tuple[set[str], set[str]]:
        """A settled burst of changed paths as (to scan now, to hold back). An urgent path
        brings every waiting one along, so that the commit it forces is whole."""
        burst = set(burst)
        if any(self.urgent(p) for p in burst):
            return burst | set(self._waiting), set()
        held = self.hold(burst, now)
        return burst - held, held

    def committed(self, paths: Iterable[str], now: float) -> None:
        """``paths`` changed in a snapshot committed at ``now``."""
        for path in paths:
            if self.interval(path):
                self._last[path] = now
                self._waiting.pop(path, None)

    def take_due(self, now: float) -> set[str]:
        """The waiting paths whose interval is over; they wait no more (a rescan decides what goes)."""
        due = {p for p, t in self._waiting.items() if t <= now}
        for path in due:
            del self._waiting[path]
        return due

    def next_due(self) -> float | None:
        """When the first waiting path is due; None when none waits."""
        return min(self._waiting.values(), default=None)
