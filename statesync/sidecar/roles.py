"""What ``statesync run`` adds to the mirror daemon for each role.

master:    after every successful sync, publish the CA of the committed snapshot at
           ``<prefix>/ca`` (``publish.CaPublisher``), and follow ``<prefix>/ca-accept`` so
           that an operator's ``accept-ca`` is published at once (``publish.AcceptanceWatcher``).
satellite: guard the CA (``guard.Guard``) next to mirroring the node's own state.
"""
from __future__ import annotations

from ..config import Config
from ..consul.store import Store
from ..errors import EXIT_OK, EXIT_RESTART


class RoleServices:
    """Started before the daemon runs, stopped after it returns."""

    def __init__(self, guard=None, exit_trigger=None, watcher=None):
        self.guard = guard
        self.exit_trigger = exit_trigger
        self.watcher = watcher

    def start(self) -> None:
        for service in (self.guard, self.watcher):
            if service is not None:
                service.start()

    def stop(self) -> None:
        for service in (self.guard, self.watcher):
            if service is not None:
                service.stop()

    @property
    def exit_code(self) -> int:
        """EXIT_RESTART (3) when the guard purged and guard.trigger is exit, else 0."""
        if self.exit_trigger is not None and self.exit_trigger.requested.is_set():
            return EXIT_RESTART
        return EXIT_OK


def attach(cfg: Config, daemon) -> RoleServices:
    """Wire the role of ``cfg`` into ``daemon`` (a ``daemon.Daemon``); return what to start and stop."""
    if cfg.role == "master":
        from ..guard.publish import CA_CERT, AcceptanceWatcher, CaPublisher
        publisher = CaPublisher(daemon.repo, cfg.state_dir, fence=daemon.fence, on_conflict=cfg.on_conflict,
                                ca_entry=cfg.in_state(CA_CERT))
        daemon.on_commit.append(publisher)
        return RoleServices(watcher=AcceptanceWatcher(publisher))
    from ..guard import triggers
    from ..guard.satellite import Guard
    trigger = triggers.from_settings(cfg.guard, stop=daemon.stop)
    guard = Guard(cfg, Store(cfg.consul), trigger)
    return RoleServices(guard, trigger if isinstance(trigger, triggers.ExitTrigger) else None)
