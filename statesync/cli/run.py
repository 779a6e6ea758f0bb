"""``statesync run``: the sidecar (assembled in ``sidecar/serve``)."""
from __future__ import annotations

import argparse

from .. import __version__, config


def cmd_run(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..sidecar.serve import run
    return run(cfg, __version__)
