"""The satellite CA guard: notice that the master's CA changed, quarantine the node's
certificates and fire the restart trigger, so that Icinga 2 enrols the node again.

Two ways in, one way out. A Consul blocking query on ``<prefix>/ca`` reacts within
moments of a new publication; each time its wait runs out (``guard.check_interval``) the
answer is compared again as a safety net. Both run in the guard's one thread, on its one
Consul connection, and call ``check``, which is serialised by a lock, decides with the pure
``logic.decide`` and acts only on a *mismatch* that

  * is confirmed by ``guard.confirmations`` further readings (the published CA read
    consistently from Consul each time), ``guard.confirm_interval`` seconds apart,
    all naming the same keys on both sides;
  * comes from a published document whose PEM parses and matches its published
    fingerprints (``cadoc.decode``; anything else is *cannot tell*);
  * falls outside ``guard.purge_window`` of the previous purge, whose time is read
    from the quarantine directory names, so that it survives restarts;
  * finds the restart trigger usable (its preflight ``check``) and, with
    ``guard.parent_host``, the parent presenting a certificate of the published CA
    (``parent.pin_parent``): a node is only sent to enrol again when it can.

A trigger that still fails after the move gets the certificates moved back, and the
attempt does not count for the purge window, so the next check tries again.

Consul unreachable, no published CA, an invalid one, or no local ca.crt are never a
mismatch. Every decision is logged with both fingerprints. A purge moves (never
deletes) the files into ``<state dir>/.statesync-quarantine/<UTC time>/`` — a name the
scanner skips, so the quarantine never enters a snapshot.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import structlog

from .. import disk, metrics
from ..config import Config
from ..consul.backoff import Backoff
from ..consul.store import Store
from ..consul.watch import Watch, key_query
from ..disk import CERTS_DIR, LOCAL_CA, QUARANTINE_DIR, node_cert_name
from ..errors import ConsulRefused, ParentNotVerified, StatesyncError, TriggerError
from .logic import (
    Decision,
    Verdict,
    cannot_tell,
    decide,
    future_purges,
    last_purge_time,
    purge_allowed,
    quarantine_files,
    quarantine_stamp,
    same_mismatch,
)
from .parent import pin_parent, trusted_parent_file
from .quarantine import quarantine, unquarantine
from .triggers import Trigger, preflight

log = structlog.get_logger(__name__)

# Seconds a blocking query waits on Consul before it is renewed (Store.wait bounds it).
WATCH_WAIT = 55.0
_READ = object()  # "read the published CA from Consul"


@dataclass
class GuardState:
    """What the guard has done; read by tests and for diagnostics."""

    checks: int = 0
    last: Decision | None = None
    phase: str = "idle"  # idle, confirming, purging
    purges: list[Path] = field(default_factory=list)
    fired: int = 0
    trigger_errors: int = 0
    trigger_problem: str = ""  # the last preflight's answer; "" when the trigger is usable
    held: int = 0  # confirmed mismatches not acted on: trigger unusable or parent not on the published CA
    watch_problem: str = ""  # why the published CA cannot be watched (Consul away or refusing); "" when it can
    watch_refused: bool = False  # ... because Consul refuses the connection (per-address limit)


class Guard:
    """Guards one satellite's certificates against a changed master CA.

    ``trigger`` may be None for read-only use (``observe``, ``statesync check-ca``).
    ``clock`` gives epoch seconds (the purge window is wall-clock time, persisted in
    directory names).
    """

    def __init__(self, cfg: Config, store: Store, trigger: Trigger | None,
                 clock: Callable[[], float] = time.time):
        self.cfg = cfg
        self.settings = cfg.guard
        self.store = store
        self.trigger = trigger
        self.root = cfg.state_dir
        self.key = cfg.layout.ca
        self.clock = clock
        self.state = GuardState()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._last_purge: float | None = None
        self._checked = 0.0  # monotonic time of the last check the watcher made

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the guard's one thread; return at once.

        One thread and one Consul connection (the transport keeps one per thread): the blocking
        query on the published CA, the confirmations and the periodic check all run in turn on
        it. Consul counts connections per client address (``limits.http_max_conns_per_client``,
        200 by default), so a fleet behind one NAT or proxy is refused at half its size when
        each guard holds two; the periodic check is the blocking query's wait running out."""
        log.info("CA guard started", key=self.key, trigger=getattr(self.trigger, "name", None),
                 confirmations=self.settings.confirmations, confirm_interval=self.settings.confirm_interval,
                 check_interval=self.settings.check_interval, purge_window=self.settings.purge_window)
        self._stop.clear()
        self._preflight("start")
        metrics.guard_watching.set(1)
        self._watcher = threading.Thread(target=self._watch, name="ca-guard", daemon=True)
        self._watcher.start()

    def stop(self, timeout: float = 0.5) -> None:
        """Stop; a confirmation in progress is abandoned (nothing is purged)."""
        self._stop.set()
        if self._watcher is not None:
            # The thread may sit in a blocking query that cannot be interrupted. It is a
            # daemon thread that does nothing once stopped and leaves at its next wake-up
            # (check_interval or WATCH_WAIT at most), so waiting for it longer gains nothing.
            self._watcher.join(timeout)
            self._watcher = None
        with self._lock:  # wait for a check in progress to notice the stop
            pass

    def problem(self) -> str:
        """Why the guard cannot watch the published CA, for /healthz: only Consul refusing its
        connection (the per-address limit), which lasts; "" otherwise. Consul away turns no
        /healthz 503, as for the mirror: a restart would not bring it back."""
        problem = self.state.watch_problem
        if not self.state.watch_refused:
            return ""
        return f"CA guard cannot watch the published CA: {problem}"

    def _watch(self) -> None:
        seen = _READ
        self._checked = time.monotonic()

        def on_news(pair, first: bool) -> None:
            nonlocal seen
            current = pair.modify_index if pair is not None else None
            # For an absent key the index moves with any KV write; act only on a change of ours.
            if current != seen:
                seen, self._checked = current, time.monotonic()
                self._safe_check("watch", published=pair.value if pair is not None else None)
            else:
                self._periodic(pair, due=True)

        wait = min(WATCH_WAIT, self.settings.check_interval)
        Watch(key_query(self.store, self.key, wait), on_news, self._stop, Backoff(0.25, 5.0),
              "the published CA", self.key, level="debug", on_quiet=self._periodic, on_trouble=self._trouble).run()

    def _periodic(self, pair=_READ, due: bool = False) -> None:
        """The periodic check, on ``pair`` as the blocking query answered it (or read anew); with
        ``due``, only once ``guard.check_interval`` has passed since the last check."""
        if due and time.monotonic() - self._checked < self.settings.check_interval:
            return
        self._checked = time.monotonic()
        self._preflight("periodic")
        published = pair if pair is _READ else (pair.value if pair is not None else None)
        self._safe_check("periodic", published=published)

    def _trouble(self, exc: BaseException | None) -> None:
        """One line when watching starts failing (an error when Consul refuses the connection, a
        warning when it is away), one info line when it works again; /healthz (refused) and
        statesync_guard_watching show it in between, the retries log at debug level. While it
        fails, the periodic check still runs when due: it records "cannot tell", purges nothing."""
        problem = "" if exc is None else (str(exc) if isinstance(exc, StatesyncError) else f"{type(exc).__name__}: {exc}")
        previous, self.state.watch_problem = self.state.watch_problem, problem
        was_refused, self.state.watch_refused = self.state.watch_refused, isinstance(exc, ConsulRefused)
        metrics.guard_watching.set(0 if problem else 1)
        if (problem and not previous) or (self.state.watch_refused and not was_refused):
            level = log.error if self.state.watch_refused else log.warning
            level("CA guard cannot watch the published CA: a CA change goes unnoticed until it can",
                  key=self.key, error=problem)
        elif previous and not problem:
            log.info("CA guard watching the published CA again", key=self.key)
        if problem:
            self._periodic(due=True)

    def _preflight(self, source: str) -> str:
        """Check the trigger; log a new problem once at error level, and its end; return it."""
        if self.trigger is None:
            return ""
        problem = preflight(self.trigger)
        metrics.trigger_ready.set(0 if problem else 1)
        previous, self.state.trigger_problem = self.state.trigger_problem, problem
        if problem and problem != previous:
            log.error("restart trigger not usable; no certificates are quarantined until it is",
                      trigger=self.trigger.name, source=source, error=problem)
        elif previous and not problem:
            log.info("restart trigger usable again", trigger=self.trigger.name, source=source)
        return problem

    def _safe_check(self, source: str, **kwargs) -> None:
        try:
            self.check(source, **kwargs)
        except Exception as exc:  # a bug must not end the watcher thread or the periodic job
            log.error("CA check failed unexpectedly", source=source, error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(1.0)

    # -- checking -------------------------------------------------------------------

    def observe(self, published=_READ, consistent: bool = False) -> Decision:
        """Read the local files and (unless ``published`` is given: raw bytes or None)
        the published CA, and decide. Never raises: failures are ``cannot-tell``."""
        local = None
        try:
            local = _read(self.root / LOCAL_CA)
            name = node_cert_name(_names(self.root / CERTS_DIR), self.settings.cert_name, self.cfg.node)
            node_path = disk.node_cert(name)
            node_cert = _read(self.root / node_path)
        except OSError as exc:
            return cannot_tell(f"cannot read the local certificates: {exc.strerror or exc}", local)
        if published is _READ:
            try:
                pair = self.store.get(self.key, consistent=consistent)
            except StatesyncError as exc:
                return cannot_tell(f"Consul unreachable or refusing: {exc}", local)
            published = pair.value if pair is not None else None
        return decide(local, published, node_cert, node_path, now=self.clock(), clock_skew=self.settings.clock_skew)

    def check(self, source: str, published=_READ, wait: bool = True) -> Decision | None:
        """Compare once and act on a confirmed mismatch; return the final decision.

        ``source`` names the caller in the log. With ``wait=False`` return None at once
        when another check is in progress.
        """
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            if self._stop.is_set():
                return None
            decision = self.observe(published)
            self._record(decision, source)
            if decision.verdict is not Verdict.MISMATCH:
                return decision
            return self._on_mismatch(decision)
        finally:
            self._lock.release()

    def _record(self, d: Decision, source: str) -> None:
        metrics.set_guard_state(d.verdict.value)
        self.state.checks += 1
        previous, self.state.last = self.state.last, d
        fields = dict(source=source, key=self.key, **d.log_fields())
        if d.untrusted:
            metrics.untrusted_cas.inc()
        if d.untrusted and (previous is None or previous.reason != d.reason):
            log.error("CA check", note="the published CA is no CA worth acting on; nothing is purged", **fields)
        elif d.verdict is Verdict.MISMATCH:
            log.warning("CA check", **fields)
        elif d.verdict is Verdict.RENEWED:
            # Icinga 2 >= 2.14 renews its CA keeping the key: the same CA, never a purge.
            log.info("CA check", note="CA certificate renewed with the same key; nothing to do", **fields)
        elif d.verdict is Verdict.UNKNOWN and (previous is None or previous.reason != d.reason):
            log.warning("CA check", note="cannot tell; nothing is purged", **fields)
        else:
            log.info("CA check", **fields)

    def _last_purge_time(self) -> float | None:
        now, skew = self.clock(), self.settings.clock_skew
        try:
            names = _names(self.root / QUARANTINE_DIR)
        except OSError:
            names = []
        persisted = last_purge_time(names, now, skew)
        future = future_purges(names, now, skew)
        if future:
            log.error("quarantine directories dated in the future are ignored for the purge window",
                      quarantine=str(self.root / QUARANTINE_DIR), names=sorted(future)[:10], clock_skew=skew)
        times = [t for t in (persisted, self._last_purge) if t is not None]
        return max(times) if times else None

    def _on_mismatch(self, first: Decision) -> Decision:
        g, fields = self.settings, first.log_fields()
        last = self._last_purge_time()
        if not purge_allowed(last, self.clock(), g.purge_window):
            log.warning("CA mismatch, but certificates were purged within the purge window; not purging again",
                        last_purge=_iso(last), purge_window=g.purge_window, **fields)
            return first
        log.warning("CA mismatch; confirming before acting", confirmations=g.confirmations,
                    confirm_interval=g.confirm_interval, **fields)
        self.state.phase = "confirming"
        try:
            decision = first
            for i in range(1, g.confirmations + 1):
                if self._stop.wait(g.confirm_interval):
                    log.info("stopping; the unconfirmed CA mismatch is not acted on", **fields)
                    return decision
                again = self.observe(consistent=True)
                self._record(again, f"confirmation {i}/{g.confirmations}")
                if not same_mismatch(first, again):
                    log.warning("CA mismatch not confirmed; nothing purged", **again.log_fields())
                    return again
                decision = again
            # decide() has parsed the published PEM and matched it against both published
            # fingerprints on every reading; a document failing that is never a mismatch.
            self._purge(decision)
            return decision
        finally:
            self.state.phase = "idle"

    # -- acting ---------------------------------------------------------------------

    def _purge(self, d: Decision) -> None:
        self.state.phase = "purging"
        fields = d.log_fields()
        if not self._may_purge(d, fields):
            self.state.held += 1
            return
        names = _names(self.root / CERTS_DIR)
        files = quarantine_files(node_cert_name(names, self.settings.cert_name, self.cfg.node))
        if self.settings.parent_host:  # the pin just written may live in certs/: it stays
            pinned = os.path.abspath(trusted_parent_file(self.cfg))
            files = [f for f in files if os.path.abspath(self.root / f) != pinned]
        if self.trigger is not None:
            try:
                self.trigger.prepare()
            except OSError as exc:
                log.warning("restart trigger could not prepare", error=str(exc))
        now = self.clock()
        note = {"time": _iso(now), "node": self.cfg.node, "key": self.key, **fields,
                "published_by": d.published.node if d.published else None,
                "published_snapshot": d.published.snapshot if d.published else None}
        try:
            dest, moved = quarantine(self.root, files, quarantine_stamp(datetime.fromtimestamp(now, timezone.utc)),
                                     note)
        except OSError as exc:
            log.error("quarantine failed; restart not triggered", error=str(exc), **fields)
            return
        log.warning("certificates quarantined", quarantine=str(dest), files=moved, **fields)
        if self.trigger is not None:
            try:
                result = self.trigger.fire()
            except TriggerError as exc:
                self.state.trigger_errors += 1
                self._undo(dest, moved, str(exc), fields)
                return
        self._last_purge = now
        self.state.purges.append(dest)
        metrics.purges.inc()
        if self.trigger is None:
            return
        self.state.fired += 1
        log.warning("restart triggered", trigger=self.trigger.name, result=result, **fields)

    def _may_purge(self, d: Decision, fields: dict) -> bool:
        problem = self._preflight("before purge")
        if problem:
            log.error("restart trigger not usable; certificates kept, nothing quarantined",
                      trigger=self.trigger.name, error=problem, **fields)
            return False
        if not self.settings.parent_host:
            return True
        if d.published is None:
            return False
        try:
            path = pin_parent(self.cfg, d.published.pem, now=self.clock())
        except ParentNotVerified as exc:
            log.warning("parent does not present a certificate of the published CA yet; not purging",
                        parent=self.settings.parent_host, error=str(exc), **fields)
            return False
        except StatesyncError as exc:
            log.warning("cannot pin the parent's certificate; not purging", parent=self.settings.parent_host,
                        error=str(exc), **fields)
            return False
        log.info("parent's certificate pinned for the enrolment", parent=self.settings.parent_host, file=str(path))
        return True

    def _undo(self, dest: Path, moved: list[str], error: str, fields: dict) -> None:
        try:
            left = unquarantine(self.root, dest, moved)
        except OSError as exc:
            self._last_purge = self.clock()
            log.error("restart trigger failed, and moving the certificates back failed too", trigger=self.trigger.name,
                      error=error, undo_error=str(exc), quarantine=str(dest), **fields)
            return
        if left:
            self._last_purge = self.clock()
        log.error("restart trigger failed; certificates moved back, the next check tries again",
                  trigger=self.trigger.name, error=error, left_in_quarantine=left, **fields)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def check_ca(cfg: Config, store: Store) -> Decision:
    """``statesync check-ca``'s reading: both fingerprints and the verdict, the published CA read
    consistently. Never purges; its exit code is ``Decision.exit_code``."""
    return Guard(cfg, store, None).observe(consistent=True)


def log_check_ca(cfg: Config, d: Decision) -> None:
    """Log ``check-ca``'s decision (once it is shown), counting an untrusted published CA."""
    if d.untrusted:
        metrics.untrusted_cas.inc()
        log.error("CA check", source="check-ca", key=cfg.layout.ca, **d.log_fields())
    else:
        log.info("CA check", source="check-ca", key=cfg.layout.ca, **d.log_fields())
