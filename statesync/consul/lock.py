"""One writer per node: a Consul session lock that fences every write.

The sidecar holding ``<prefix>/nodes/<node>/lock`` is the node's only writer. It holds
the lock through a session that only its TTL keeps alive, renewed by a background
thread, and every write transaction it sends opens with a ``check-session`` of the
lock key (``WriterLock.fence``), as Vault's Consul backend does. Once the session has
ended, or another session holds the lock, Consul refuses the whole transaction: a
writer that lost the lock cannot write one more key, however late it notices.

A waiting sidecar takes the lock when Consul ends the holder's session (between TTL
and twice the TTL after its last renewal, by Consul's rules) and the lock-delay has
passed; a holder that stops cleanly releases the lock, and then the waiter takes it
at once. Timing decides only how soon a takeover happens, never whether two writers
can interleave: that is the fence's job.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

import structlog

from ..errors import LockHeld, LockLost, StoreError
from ..jsonload import loads
from .client import Op
from .settings import LockSettings
from .store import Store

log = structlog.get_logger(__name__)

# A blocking query on the held lock returns when the holder's session ends; bounded so
# that a stop request is noticed within about this long.
_WATCH_S = 1.0
# The lock is free but Consul still refuses it (its lock-delay): ask again this often.
_DELAY_POLL_S = 0.2
# Shutdown waits this long at most for the lock's release (Consul may be holding requests).
_RELEASE_WAIT_S = 5.0
# Beyond the lock-delay, a lock still not free is held by someone who took it meanwhile.
_SPARE_S = 2.0


# -- pure ------------------------------------------------------------------------------

def renew_interval(ttl: float) -> float:
    """Seconds between renewals of a session with ``ttl``: a third, so two renewals may fail in a row
    before the session could lapse."""
    return ttl / 3


def retry_interval(ttl: float) -> float:
    """Seconds before retrying a renewal that failed (Consul away or electing a leader)."""
    return min(1.0, ttl / 10)


def still_valid(renewed_at: float, ttl: float, now: float) -> bool:
    """Whether a session last renewed by a request started at ``renewed_at`` is certainly still alive.

    Consul ends a session no sooner than ``ttl`` after its last renewal (usually 2×ttl);
    counting from the start of the request keeps the estimate on the safe side.
    """
    return now < renewed_at + ttl


def holder_value(host: str, pid: int, since: datetime) -> bytes:
    """The lock key's value: who holds it, for operators and for the log of a waiting sidecar."""
    return json.dumps({"host": host, "pid": pid, "since": since.isoformat(timespec="seconds")},
                      sort_keys=True).encode()


def describe_holder(value: bytes) -> str:
    """A one-line description of a lock value written by ``holder_value``; '?' when unreadable."""
    try:
        doc = loads(value)
        return f"{doc['host']} pid {doc['pid']} since {doc['since']}"
    except (ValueError, KeyError, TypeError):
        return "?"


# -- I/O -------------------------------------------------------------------------------

class WriterLock:
    """The writer lock of one node, held through one renewed Consul session.

    ``acquire`` blocks until the lock is held; ``fence`` gives the operations that
    must open every write transaction; ``release`` ends it all on shutdown. The
    renewal thread and the caller share the state under a mutex.
    """

    def __init__(self, store: Store, key: str, settings: LockSettings, name: str = "statesync",
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.key = key
        self.ttl = settings.ttl
        self.delay = settings.delay
        self.name = name
        self.clock = clock
        self._mutex = threading.Lock()
        self._session = ""
        self._renewed_at = 0.0
        self._acquired = False
        self._closed = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def session(self) -> str:
        """The current session id ('' when there is none)."""
        with self._mutex:
            return self._session

    @property
    def held(self) -> bool:
        """True while the lock was acquired and its session is certainly alive.

        Advisory only (it saves a doomed attempt): a write is safe because it is fenced.
        """
        with self._mutex:
            return bool(self._session) and self._acquired and still_valid(self._renewed_at, self.ttl, self.clock())

    @property
    def fence(self) -> tuple[Op, ...]:
        """The operations that open every write transaction of the holder.

        Raises LockLost when there is no session: a ``check-session`` with an empty
        session would pass on a free lock, so it is never sent.
        """
        with self._mutex:
            session, acquired = self._session, self._acquired
        if not session or not acquired:
            raise LockLost(f"this sidecar does not hold the writer lock {self.key!r}")
        return (Op("check-session", self.key, session=session),)

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this process holds the lock (True) or ``stop`` is set (False).

        Raises ConsulUnavailable, PermissionDenied or StoreError when Consul fails;
        the caller retries (the session, if any, is kept for the next attempt).
        """
        started = self.clock()
        value = holder_value(socket.gethostname(), os.getpid(), datetime.now(timezone.utc))
        announced = False
        while not stop.is_set():
            session = self._ensure_session()
            try:
                self.store.lock_acquire(self.key, session, value)
            except LockLost:
                self._forget(session, "session ended while waiting")
                continue
            except LockHeld:
                if not announced:
                    pair = self.store.get(self.key)
                    log.info("waiting for the writer lock", key=self.key,
                             holder=describe_holder(pair.value) if pair and pair.session else "none (lock-delay)")
                    announced = True
                self._wait_turn(stop)
                continue
            with self._mutex:
                if self._session != session:  # the renewer saw it end meanwhile: go round again
                    continue
                self._acquired = True
            log.info("writer lock acquired", key=self.key, session=session,
                     waited=round(self.clock() - started, 3))
            return True
        return False

    def lost(self, reason: str) -> None:
        """Record that a fenced write was refused: the lock must be acquired again before writing."""
        with self._mutex:
            was = self._acquired
            self._acquired = False
        if was:
            log.warning("writer lock lost", key=self.key, reason=reason)

    def release(self) -> None:
        """Stop renewing, release the lock and end the session; errors are logged, not raised.

        Unlocking first spares a waiting sidecar Consul's lock-delay (which follows only
        a session's end, not an explicit release). Returns within about ``_RELEASE_WAIT_S``
        even when Consul holds requests (no leader): shutdown must not hang on it.
        """
        self._closed.set()
        with self._mutex:
            session, acquired = self._session, self._acquired
            self._session, self._acquired = "", False
        if not session:
            return
        worker = threading.Thread(target=self._let_go, args=(session, acquired), name="statesync-lock-release",
                                  daemon=True)
        worker.start()
        worker.join(_RELEASE_WAIT_S)
        if worker.is_alive():
            log.warning("writer lock not released in time; Consul will end its session after the TTL", key=self.key)

    def _let_go(self, session: str, acquired: bool) -> None:
        try:
            if acquired:
                self.store.lock_release(self.key, session)
            self.store.session_destroy(session)
            log.info("writer lock released", key=self.key)
        except StoreError as exc:
            log.warning("writer lock not released; Consul will end its session after the TTL",
                        key=self.key, error=str(exc))

    # -- internals ---------------------------------------------------------------------

    def _ensure_session(self) -> str:
        with self._mutex:
            session = self._session
            fresh = session and still_valid(self._renewed_at, self.ttl, self.clock())
        if session and not fresh:
            # Renewals failed for a while (Consul away); the session may still be alive.
            started = self.clock()
            try:
                self.store.session_renew(session)
                self._renewed(session, started)
            except LockLost:
                self._forget(session, "session ended")
                session = ""
        if not session:
            started = self.clock()
            session = self.store.session_create(self.name, self.ttl, self.delay)
            with self._mutex:
                self._session, self._renewed_at, self._acquired = session, started, False
            self._start_renewer()
        return session

    def _renewed(self, session: str, started: float) -> None:
        with self._mutex:
            if self._session == session:
                self._renewed_at = started

    def _forget(self, session: str, reason: str) -> None:
        with self._mutex:
            if self._session != session:
                return
            was = self._acquired
            self._session, self._acquired = "", False
        if was:
            log.warning("writer lock lost", key=self.key, reason=reason)

    def _wait_turn(self, stop: threading.Event) -> None:
        pair = self.store.get(self.key)
        if pair is None or not pair.session:
            stop.wait(_DELAY_POLL_S)
            return
        # Returns as soon as the holder's session ends (the key's index moves) or after the wait.
        self.store.wait(self.key, pair.modify_index, _WATCH_S)

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_loop, name="statesync-lock-renewal", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        wait = renew_interval(self.ttl)
        failures = 0
        while not self._closed.wait(wait):
            wait = renew_interval(self.ttl)
            session = self.session
            if not session:
                continue
            started = self.clock()
            try:
                self.store.session_renew(session)
            except LockLost as exc:
                self._forget(session, str(exc))
                failures = 0
                continue
            except StoreError as exc:
                # Retried often so that a returning Consul is used at once; logged once per outage.
                if not failures:
                    log.warning("session renewal failed; retrying", key=self.key, error=str(exc))
                failures += 1
                wait = retry_interval(self.ttl)
                continue
            if failures:
                log.info("session renewed again", key=self.key, failed_attempts=failures)
                failures = 0
            self._renewed(session, started)


def writer_lock(settings: LockSettings, store: Store, key: str, node: str) -> WriterLock | None:
    """The writer lock a daemon for ``node`` takes, or None when ``settings.enabled`` is off."""
    if not settings.enabled:
        return None
    return WriterLock(store, key, settings, name=f"statesync {node} on {socket.gethostname()} pid {os.getpid()}")


@contextmanager
def holding_writer_lock(store: Store, key: str, settings: LockSettings, node: str,
                        command: str) -> Iterator[tuple[Op, ...]]:
    """Hold ``node``'s writer lock ``key`` for the block of a one-off ``command`` (``gc``,
    ``rekey``) and give its fence (``()`` when ``settings.enabled`` is off: nothing fences
    then, as for the daemon). ``command`` is named in every message, so that the operator
    is told which command to run again.

    Raises LockHeld naming the holder when another process holds it: a one-off command
    never waits for a sidecar, which would go on writing once it got the lock back.
    """
    lock = writer_lock(settings, store, key, node)
    if lock is None:
        log.warning(f"lock.enabled is off: {command} is not fenced; make sure no sidecar of the node runs",
                    node=node)
        yield ()
        return
    _refuse_if_held(store, key, node, command)
    stop = threading.Event()
    # A free lock may still be in Consul's lock-delay after a holder that died: wait that out only.
    timer = threading.Timer(settings.delay + _SPARE_S, stop.set)
    timer.daemon = True
    timer.start()
    try:
        if not lock.acquire(stop):
            _refuse_if_held(store, key, node, command)
            raise LockHeld(f"the writer lock of node {node!r} did not become free within "
                           f"{settings.delay + _SPARE_S:g}s; run {command} again")
        yield lock.fence
    finally:
        timer.cancel()
        lock.release()


def _refuse_if_held(store: Store, key: str, node: str, command: str) -> None:
    pair = store.get(key, consistent=True)
    if pair is not None and pair.session:
        raise LockHeld(f"the writer lock of node {node!r} is held by {describe_holder(pair.value)}: "
                       f"stop the node's sidecar, then run {command} again")
