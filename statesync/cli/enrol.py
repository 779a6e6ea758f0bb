"""``statesync enrol``: a satellite's one-shot registration, for init containers (``--wait``:
until the certificate is signed)."""
from __future__ import annotations

import argparse

from .. import config
from ..errors import EXIT_OK


def cmd_enrol(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..enrol.enroller import enrol_once
    outcome = enrol_once(cfg, wait=args.wait is not None, timeout=args.wait or 0.0)
    print(f"{outcome.state}: {outcome.detail}")
    return EXIT_OK
