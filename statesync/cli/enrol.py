"""Enrolment commands: ``enrol`` (a satellite's one-shot registration, for init containers)
and ``satellites`` (what the master was asked to accept, and how far each got)."""
from __future__ import annotations

import argparse
import sys

from .. import config


def cmd_enrol(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..enrol.satellite import enrol_once
    return enrol_once(cfg, wait=args.wait is not None, timeout=args.wait or 0.0, out=sys.stdout)


def cmd_satellites(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..enrol.listing import print_rows
    return print_rows(cfg, sys.stdout, args.json)
