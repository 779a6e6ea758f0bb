"""What ``statesync run`` adds to the mirror daemon for each role.

master:    after every successful sync, publish the CA of the committed snapshot at
           ``<prefix>/ca`` (``publish.CaPublisher``), and follow ``<prefix>/ca-accept`` so
           that an operator's ``accept-ca`` is published at once (``publish.AcceptanceWatcher``).
satellite: guard the CA (``guard.Guard``) next to mirroring the node's own state.
With enrol.enabled, a master also accepts and signs registered satellites
(``enrol.acceptor.Acceptor``) when its state holds ``ca/ca.key``, and stands by otherwise (the
second master of an HA zone) and a satellite registers its pending request
(``enrol.enroller.Enroller``).
"""
from __future__ import annotations

from ..config import Config
from ..consul.store import Store
from ..errors import EXIT_OK, EXIT_RESTART


class RoleServices:
    """Started before the daemon runs, stopped after it returns."""

    def __init__(self, guard=None, exit_trigger=None, watcher=None, enrol=None):
        self.guard = guard
        self.exit_trigger = exit_trigger
        self.watcher = watcher
        self.enrol = enrol

    def start(self) -> None:
        for service in (self.guard, self.watcher, self.enrol):
            if service is not None:
                service.start()

    def stop(self) -> None:
        for service in (self.enrol, self.guard, self.watcher):
            if service is not None:
                service.stop()

    def problem(self) -> str:
        """Why a service cannot do its job ("" when all can), for /healthz."""
        problems = [getattr(s, "problem", lambda: "")() for s in (self.guard, self.enrol)]
        return "; ".join(p for p in problems if p)

    def note(self) -> str:
        """What a healthy /healthz adds ("" for nothing): a master that stands by says so."""
        return getattr(self.enrol, "note", lambda: "")()

    @property
    def exit_code(self) -> int:
        """EXIT_RESTART (3) when the guard purged and guard.trigger is exit, else 0."""
        if self.exit_trigger is not None and self.exit_trigger.requested.is_set():
            return EXIT_RESTART
        return EXIT_OK


def attach(cfg: Config, daemon) -> RoleServices:
    """Wire the role of ``cfg`` into ``daemon`` (a ``daemon.Daemon``); return what to start and stop."""
    if cfg.role == "master":
        from ..disk import CA_CERT
        from ..guard.publish import AcceptanceWatcher, CaPublisher
        publisher = CaPublisher(daemon.repo, cfg.state_dir, fence=daemon.fence, on_conflict=cfg.on_conflict,
                                ca_entry=cfg.in_state(CA_CERT))
        daemon.on_commit.append(publisher)
        acceptor = None
        if cfg.enrol.enabled:
            from ..enrol.acceptor import Acceptor
            acceptor = Acceptor(cfg, Store(cfg.consul))
        return RoleServices(watcher=AcceptanceWatcher(publisher), enrol=acceptor)
    from ..guard import triggers
    from ..guard.ca_watch import Guard
    trigger = triggers.from_settings(cfg.guard, stop=daemon.stop)
    guard = Guard(cfg, Store(cfg.consul), trigger)
    enroller = None
    if cfg.enrol.enabled:
        from ..enrol.enroller import Enroller
        enroller = Enroller(cfg, Store(cfg.consul))
    return RoleServices(guard, trigger if isinstance(trigger, triggers.ExitTrigger) else None, enrol=enroller)
