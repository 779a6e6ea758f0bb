"""``statesync ready``: the readiness probe, exit 0 once the start-up restore has finished."""
from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import EXIT_FAILURE, EXIT_OK


def cmd_ready(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..restore.startup import wait_ready
    if wait_ready(cfg.ready_file, args.wait):
        print(f"ready: {cfg.ready_file}")
        return EXIT_OK
    print(f"not ready: {cfg.ready_file} does not exist", file=sys.stderr)
    return EXIT_FAILURE
