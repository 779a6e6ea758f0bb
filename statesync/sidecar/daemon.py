"""The mirror daemon: watch --root, let bursts settle, commit one snapshot per burst.

Watching says *which* paths changed; the scanner rereads only those. Commits that
fail because Consul is away are retried with backoff, and because the scanner's
view always reflects the current tree, the first commit that succeeds catches up
with everything that happened meanwhile.
"""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.observers import Observer

from .. import metrics
from ..config import Config
from ..consul.backoff import Backoff
from ..consul.lock import WriterLock, writer_lock
from ..disk import STATE_DIRS
from ..errors import (
    CasConflict,
    ConsulUnavailable,
    LockLost,
    MissingChunks,
    RootMissing,
    StoreError,
    SuspiciousDrop,
    UnreadablePath,
)
from ..repo import backup
from ..repo.refsets import Known
from ..repo.repository import Head, Repo
from ..snapshot.manifest import Manifest
from ..tree.scan import Scanner
from .changes import Changes
from .memory import release_free_memory
from .pacing import Pacer

log = structlog.get_logger(__name__)

# watchdog's inotify emitter re-adds the watch of a directory created while it was
# being scanned and warns that it replaced its own callback: harmless, and noisy while
# Icinga 2 creates api/packages/. Nothing else is silenced.
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)


@dataclass
class DaemonState:
    """What the daemon knows; read by health checks and tests."""

    commits: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_commit_id: str = ""
    last_commit_time: float = 0.0
    last_error: str = ""
    # the last failed cycle failed only because Consul was unreachable
    consul_away: bool = False
    ready: threading.Event = field(default_factory=threading.Event)
    # monotonic time the main loop last went round; /healthz reads it
    beat: float = field(default_factory=time.monotonic)

    def failing(self, max_failures: int) -> str:
        """Why /healthz should say unhealthy: ``max_failures`` cycles in a row failed; "" otherwise.
        An unreachable Consul is /readyz's to report: restarting the sidecar would not bring it back."""
        if self.consecutive_failures < max_failures or self.consul_away:
            return ""
        return f"{self.consecutive_failures} sync cycles failed in a row; the last: {self.last_error}"


class Daemon:
    """Mirrors one root into one node's snapshots until ``stop()``."""

    def __init__(self, cfg: Config, repo: Repo):
        self.cfg = cfg
        self.repo = repo
        # A file that never reads whole keeps the version the head holds (fetched only then).
        self.scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size, cfg.sealing, previous=self._head_manifest,
                               compression=cfg.compression)
        self.state = DaemonState()
        self._stop = threading.Event()
        self._changes = Changes(str(cfg.root), cfg)
        self._head: Head | None = None
        self._known = Known()
        # Chunks read for a commit that failed: never stored, and not read again while their files
        # stay unchanged, so the next attempt must carry them (else it fails for missing chunks).
        self._unsent: dict[str, bytes] = {}
        self._pending = True
        # No sync has succeeded yet: the first full scan reads the whole tree, all of it new to an
        # empty prefix, so it streams its chunks up while it reads, as `statesync backup` does.
        # Until then the pacer holds nothing back, so no streamed chunk (kept only as its size)
        # must wait for a later commit. Later scans stream too unless min_interval paces a path:
        # the pacer may hold a file back, and it keeps the chunks of the version it held, which a
        # streamed chunk (only its size left) cannot give; those scans keep what they read in memory.
        self._synced = False
        # The periodic jobs (full rescan, GC) are apscheduler's to time and the main loop's to run:
        # a job only marks its work due and wakes the loop, so none ever overlaps a commit. GC is
        # due at once, at the first idle moment. What is not on it: docs/ARCHITECTURE.md.
        self.scheduler = BackgroundScheduler(daemon=True, timezone=timezone.utc)
        self._intervals = {"full": cfg.full_scan_interval, "gc": cfg.gc_interval}
        self._due: set[str] = {"gc"}
        self._pacer = Pacer(cfg.min_interval, tuple(cfg.in_state(d) for d in STATE_DIRS))
        # The manifest last committed (None: ask Consul), and the chunks of the versions of paced
        # files a commit held back: the scanner will not read those files again to give them.
        self._committed: Manifest | None = None
        self._held_chunks: dict[str, dict[str, bytes]] = {}
        # One writer per node: every write is fenced by this lock (None when lock.enabled is off).
        self.lock: WriterLock | None = writer_lock(cfg.lock, repo.store, repo.layout.lock, cfg.node)
        # Callables (record, manifest) run after every successful sync, with the head's
        # record and manifest whether or not the sync wrote a new snapshot (the master's
        # CA publisher is one). A StoreError they raise fails the sync, which is retried.
        self.on_commit: list = []

    def stop(self, *_args) -> None:
        self._stop.set()
        self._changes.event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self) -> None:
        """Mirror until stopped. Returns after the commit in progress, if any, is complete."""
        self.cfg.root.mkdir(parents=True, exist_ok=True)
        # watchdog's inotify thread races its own stop and then logs "queue_events() called when the
        # thread is inactive" at error level through unconfigured stdlib logging: noise on stderr
        # at every shutdown, not a lost event (the full rescan covers anything inotify missed).
        logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
        observer = Observer()
        observer.schedule(self._changes, str(self.cfg.root), recursive=True)
        observer.start()
        log.info("mirroring", root=str(self.cfg.root), node=self.cfg.node, prefix=self.cfg.prefix)
        # apscheduler reports through stdlib logging, which nobody configures: only its errors show.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        for work, seconds in self._intervals.items():
            self.scheduler.add_job(self._request, "interval", args=(work,), seconds=seconds, id=work,
                                   max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.start()
        try:
            self._loop()
            self._last_commit()
        finally:
            self.scheduler.shutdown(wait=False)
            observer.stop()
            observer.join(timeout=5)
            if self.lock is not None:
                self.lock.release()
            log.info("stopped", commits=self.state.commits)

    def _last_commit(self) -> None:
        """On a stop, commit once what changed since the last commit, without waiting for the
        burst to settle or for a paced path's interval: Icinga 2 writes its program state as it
        stops, and an engine stops this sidecar right after it (docker-compose stops a stack's
        containers one by one), so that state would otherwise never reach Consul. A full scan,
        which rereads only what changed: inotify may not have delivered the last events yet. Not
        tried before the first sync, nor while Consul is away (the stop must not wait for it)."""
        if self._head is None or (self.state.consul_away and self.state.consecutive_failures):
            return
        self._changes.take()
        self._pacer.take_due(math.inf)
        try:
            self._sync("full", paced=False)
        except (StoreError, OSError, SuspiciousDrop, UnreadablePath, RootMissing) as exc:
            log.warning("no last commit before stopping", error=str(exc))

    def _request(self, work: str) -> None:
        """The scheduler's job: mark ``work`` due and wake the main loop, which does it."""
        self._due.add(work)
        self._changes.event.set()

    def _done(self, work: str) -> None:
        """``work`` ran now: its next run is a whole interval away, even when it ran early (a
        failure or a new writer lock forces a full scan), as the loop's own timer once had it."""
        self._due.discard(work)
        job = self.scheduler.get_job(work)
        if job is not None:
            job.modify(next_run_time=datetime.now(timezone.utc) + timedelta(seconds=self._intervals[work]))

    def _loop(self) -> None:
        # Capped low: once Consul is back (an outage, an election) the sidecar should catch up soon.
        backoff = Backoff(0.5, 5.0)
        while not self._stop.is_set():
            work = self._next_work()
            if work is None:
                break
            if work == "gc":
                self._maybe_gc()
                continue
            try:
                self._sync(work)
                backoff.reset()
            except RootMissing as exc:
                # No failure: at the first start the image's entrypoint makes the roots after readiness.
                if str(exc) != self.state.last_error or not self._pending:  # once per wait
                    log.warning("waiting for the named roots; committing nothing", error=str(exc))
                self.state.last_error, self._pending = str(exc), True
                self._changes.event.wait(5.0)  # a root appearing is an event in scope
            except (StoreError, OSError, SuspiciousDrop, UnreadablePath) as exc:
                self._failed(exc)
                self._stop.wait(backoff.pause())
                continue
            self._maybe_gc()

    def _next_work(self) -> str | set[str] | None:
        """Block until there is something to do: "full" for a full scan, the set of changed
        paths once their burst has settled (or their min_interval is over), "gc" when idle
        and garbage collection is due. None when stopping."""
        while not self._stop.is_set():
            now = self.state.beat = time.monotonic()
            if self._head is None or self._pending or "full" in self._due:
                self._changes.take()
                return "full"
            ready = self._pacer.take_due(now)
            if ready:
                return ready
            wait = self._changes.settled(self.cfg.debounce, self.cfg.max_wait)
            if wait == 0.0:
                burst, quiet_dirs = self._changes.take_apart()
                go, _ = self._pacer.split(burst, now)
                if go:
                    return go | quiet_dirs
                self._changes.add_quiet(quiet_dirs)
                continue
            if wait < 0 and "gc" in self._due:
                # Without the writer lock a sync of no paths comes first: it takes the lock again.
                return "gc" if self.lock is None or self.lock.held else set()
            if wait > 0:
                self._stop.wait(wait)
                continue
            self._changes.event.clear()
            # Re-check: an event or a job may have landed before clear().
            if self._changes.settled(0, 0) < 0 and not self._due:
                self._changes.event.wait(self._next_timer())
        return None

    def _next_timer(self) -> float:
        """Until the next paced path is due (the periodic jobs wake the loop themselves)."""
        now = time.monotonic()
        return max(0.05, min((self._pacer.next_due() or now + 5.0) - now, 5.0))

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.filename is not None:
            exc = UnreadablePath.from_os_error(exc, self.cfg.root)
        metrics.commit_failures.inc()
        self.state.failures += 1
        self.state.consecutive_failures += 1
        metrics.consecutive_failures.set(self.state.consecutive_failures)
        self.state.last_error = str(exc)
        self.state.consul_away = isinstance(exc, ConsulUnavailable)
        self._pending = True
        log.warning("commit failed; will retry", error=str(exc), consecutive=self.state.consecutive_failures)

    def fence(self) -> tuple:
        """The operations that must open every write transaction: the writer lock's check
        (none without a lock). Raises LockLost when the lock is not held."""
        return self.lock.fence if self.lock is not None else ()

    def _take_lock(self) -> bool:
        """Wait for the writer lock; False when stopping. Raises StoreError when Consul fails."""
        if not self.lock.acquire(self._stop):
            self._pending = True
            return False
        # Another writer may have moved the head and collected chunks meanwhile: start over.
        self._head = None
        self.scanner.forget()
        return True

    def _sync(self, dirty, paced: bool = True) -> None:
        if self.lock is not None and not self.lock.held:
            if not self._take_lock():
                return
            dirty = "full"
        if self._head is None:
            self._load_head()
        full = dirty == "full"
        released: set[str] = set()

        def before_commit(result) -> None:
            if full:
                self._done("full")
            if self._pacer.active:
                released.update(self._pace(result, time.monotonic() if paced else math.inf))

        try:
            out = backup.run(self.repo, self.scanner, self._head, self._known, roots=self.cfg.roots,
                             root=self.cfg.root, meta={"role": self.cfg.role}, fence=self.fence(),
                             max_drop=self.cfg.max_drop, dirty=None if full else dirty,
                             stream=(full and not self._synced) or not self._pacer.active, carried=self._unsent,
                             before_commit=before_commit)
        except LockLost as exc:
            self.lock.lost(str(exc))
            self._head = None
            raise
        except (MissingChunks, CasConflict) as exc:
            log.warning("reloading from Consul", reason=str(exc))
            self._head = None
            self.scanner.forget()
            raise StoreError(str(exc)) from None
        result, res = out.scan, out.commit
        self._synced = True
        self._pending = False
        # Only pacing compares with it: else the entries of every file would stay alive between
        # commits, where the scanner keeps a packed record of each (tree/records).
        self._committed = result.manifest if self._pacer.active else None
        self._pacer.committed(released, time.monotonic())
        for path in released:
            self._held_chunks.pop(path, None)
        if res is None:
            self._after_commit(self._head.record, result.manifest)
            self._mark_ok()
            return
        self._head = res.head
        self.state.commits += 1
        self.state.last_commit_id = res.record.id
        self.state.last_commit_time = time.time()
        metrics.record_commit(res.seconds, res.chunks_written, res.chunks_reused, res.bytes_written,
                              self.state.last_commit_time)
        self._mark_ok()
        log.info("committed", snapshot=res.record.id, files=res.record.files, bytes=res.record.bytes,
                 chunks_written=res.chunks_written, chunks_reused=res.chunks_reused,
                 kv_writes=res.kv_writes, seconds=round(res.seconds, 3))
        self._after_commit(res.record, result.manifest)
        del result, out  # the chunks read for this commit: give their memory back to the system
        release_free_memory()

    def _after_commit(self, record, manifest) -> None:
        for hook in self.on_commit:
            try:
                hook(record, manifest)
            except StoreError:
                raise
            except Exception as exc:  # a hook's bug must not stop the mirror
                log.error("on_commit hook failed", hook=repr(hook), error=f"{type(exc).__name__}: {exc}")

    def _mark_ok(self) -> None:
        if self.state.consecutive_failures:
            log.info("caught up with Consul", after_failures=self.state.consecutive_failures)
        self.state.consecutive_failures = 0
        metrics.consecutive_failures.set(0)
        self.state.ready.set()

    def _head_manifest(self):
        head = self._head
        return self.repo.manifest(head.record) if head is not None and head.record is not None else None

    def _load_head(self) -> None:
        head = self.repo.checked_head(fence=self.fence())
        if head.record is not None and not self.state.commits:
            # Until this process commits, the last commit is the head: its predecessor's, after a restart.
            metrics.record_head(head.record.created)
        self._known = Known(self.repo.refs(head.record)) if head.record is not None else Known()
        self._head = head
        self._committed = None

    def _pace(self, result, now: float) -> set[str]:
        """Put back the last committed version of each paced file whose min_interval is not
        over (keeping the chunks of the version it stands in for); return the paced paths
        that do change in this commit."""
        if self._committed is None:
            self._committed = self._head_manifest() or Manifest()
        old, new = self._committed.by_path(), result.manifest.by_path()
        changed = {p for p in old.keys() | new.keys() if old.get(p) != new.get(p)}
        held = self._pacer.hold(changed, now)
        for path in held:
            if path in new:
                had = self._held_chunks.get(path, {})
                self._held_chunks[path] = {d: c for d in new[path].chunks
                                           if (c := result.new_chunks.get(d, had.get(d))) is not None}
                del new[path]
            if path in old:
                new[path] = old[path]
        if held:
            entries = tuple(sorted(new.values(), key=lambda e: e.path))
            result.manifest = Manifest(entries, result.manifest.root)
        for chunks in self._held_chunks.values():
            result.new_chunks = {**chunks, **result.new_chunks}
        return {p for p in changed - held if self._pacer.interval(p)}

    def _maybe_gc(self) -> None:
        if self._pending or "gc" not in self._due:
            return
        self._done("gc")
        try:
            self.repo.collect_garbage(self.cfg.gc_grace, fence=self.fence())
        except (StoreError, CasConflict) as exc:
            log.warning("garbage collection skipped", error=str(exc))
