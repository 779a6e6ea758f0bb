"""``statesync run`` put together: the health server, the start-up (root lock, restore or wait,
the parent's pin, the ready marker), then the daemon with its role's services until it stops.

A SIGTERM or SIGINT before the daemon's own handlers are in place ends the start-up quietly:
a container engine stops a sidecar that is still restoring or waiting for Consul with the same
signal, and dying of it unhandled reads as a crash.
"""
from __future__ import annotations

import signal
import threading
import time

import structlog

from .. import config
from ..errors import EXIT_OK, StatesyncError, UsageError
from ..repo.repository import Repo
from .wiring import open_repo

log = structlog.get_logger(__name__)


class _StoppedDuringStartup(BaseException):
    """SIGTERM or SIGINT before the daemon's own handlers are in place. A BaseException, so that no
    retry loop on the way (waiting for Consul, for the root lock) takes it for a failure to retry."""


def _stop_during_startup(signum, _frame) -> None:
    raise _StoppedDuringStartup(signal.Signals(signum).name)


def run(cfg: config.Config, version: str) -> int:
    """Run the sidecar until it stops; return its exit code. ``version`` is the one /metrics reports."""
    # A container engine stops a sidecar that is still restoring or waiting for Consul with the
    # same SIGTERM; dying of it unhandled reads as a crash (exit -15). Whatever a start-up restore
    # had begun is settled by the journal rule at the next start, as after a kill.
    signal.signal(signal.SIGTERM, _stop_during_startup)
    signal.signal(signal.SIGINT, _stop_during_startup)
    try:
        return _run(cfg, version)
    except _StoppedDuringStartup as exc:
        log.info("stopped during start-up", signal=str(exc))
        return EXIT_OK


def _run(cfg: config.Config, version: str) -> int:
    from .. import metrics
    from ..restore.rootlock import hold_root
    from ..restore.startup import at_startup, clear_ready, mark_ready, prepare
    from .daemon import Daemon
    if cfg.role is None:
        raise UsageError("role: run needs one: pass --role master or --role satellite (or set STATESYNC_ROLE, "
                         "or role in the config file)")
    repo = open_repo(cfg)
    holder: dict = {}
    server = _health_server(cfg, repo, holder, version)
    try:
        # Held for the daemon's whole life, so no restore or backup runs beside it. A second
        # sidecar on this root (a rolling update's overlap) waits rather than exits: it is a
        # service, and it takes over the moment the first one is gone.
        with hold_root(cfg.root, f"run --role {cfg.role}", create=True, wait=True):
            clear_ready(cfg.ready_file)
            # At start Consul may still be electing a leader; give it a while before giving up.
            outcome = at_startup(lambda: prepare(repo, cfg.root, cfg.role, cfg.on_conflict, cfg.roots))
            if cfg.role == "satellite":
                # Before the first enrolment (which waits for the ready marker): the parent's
                # certificate, checked against the published CA, for node setup to pin.
                from ..guard.parent import pin_at_startup
                pin_at_startup(cfg, repo.store, threading.Event())  # SIGTERM ends the wait (see run)
            mark_ready(cfg.ready_file, outcome)
            metrics.ready.set(1)
            log.info("ready", action=outcome.action, snapshot=outcome.snapshot, ready_file=str(cfg.ready_file))
            daemon = holder["daemon"] = Daemon(cfg, repo)
            return _serve(cfg, daemon, holder)
    finally:
        if server is not None:
            server.stop()


def _health_server(cfg: config.Config, repo: Repo, holder: dict, version: str):
    """Start /healthz, /readyz and /metrics when http.port is set; None otherwise."""
    if not cfg.http_port:
        return None
    from .. import metrics
    from .health import HealthServer

    def alive() -> tuple[bool, str]:
        daemon = holder.get("daemon")
        if daemon is None:
            return True, "starting: restoring or waiting for Consul"
        failing = daemon.state.failing(cfg.health_max_failures)
        if failing:
            return False, failing
        services = holder.get("services")
        problem = services.problem() if services is not None else ""
        if problem:
            return False, problem
        age = time.monotonic() - daemon.state.beat
        note = services.note() if services is not None else ""
        return age < 60, f"main loop last went round {age:.1f}s ago" + (f"; {note}" if note else "")

    def ready() -> tuple[bool, str]:
        if not cfg.ready_file.exists():
            return False, "start-up restore not finished"
        try:
            repo.store.ping()
        except StatesyncError as exc:
            return False, f"Consul: {exc}"
        return True, "ready"

    metrics.watch_store(repo.store)
    metrics.set_build_info(version)
    try:
        return HealthServer(cfg.http_bind, cfg.http_port, alive, ready).start()
    except OSError as exc:
        raise StatesyncError(f"http.port: cannot listen on {cfg.http_bind}:{cfg.http_port}: {exc.strerror}") from None


def _serve(cfg: config.Config, daemon, holder: dict) -> int:
    from . import roles
    services = holder["services"] = roles.attach(cfg, daemon)  # master: publishes its CA; satellite: guards it
    daemon.install_signal_handlers()
    services.start()
    try:
        daemon.run()
    finally:
        services.stop()
    return services.exit_code
