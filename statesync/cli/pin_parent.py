"""``statesync pin-parent``: before a satellite's first enrolment, the parent's certificate,
checked against the published CA and pinned for node setup."""
from __future__ import annotations

import argparse
import sys
import threading

from .. import config
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError


def cmd_pin_parent(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..consul.store import Store
    from ..guard.parent import pin_at_startup
    if not cfg.guard.parent_host:
        raise UsageError("guard.parent_host: pin-parent needs the parent endpoint (STATESYNC_GUARD_PARENT_HOST)")
    stop = threading.Event()
    timer = threading.Timer(args.wait, stop.set)
    timer.daemon = True
    timer.start()
    try:
        pin_at_startup(cfg, Store(cfg.consul), stop)
    finally:
        timer.cancel()
    if stop.is_set():
        print(f"statesync: error: could not pin the certificate of {cfg.guard.parent_host} within {args.wait:g}s "
              "(see the log above)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
