"""``statesync satellites``: what the master was asked to accept, and how far each got
(the states: ``enrol/listing``)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .. import config
from ..consul.store import Store
from ..errors import EXIT_OK


def cmd_satellites(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..enrol.listing import rows
    found = rows(cfg, Store(cfg.consul))
    if args.json:
        json.dump([asdict(r) for r in found], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    if not found:
        print(f"no satellite registered under {cfg.layout.satellites}")
        return EXIT_OK
    print(f"{'CN':<28} {'ZONE':<20} {'LIVE ZONE':<20} {'PARENT':<12} {'KEY':<16} {'STATE':<10} DETAIL")
    for r in found:
        print(f"{r.cn[:28]:<28} {r.zone[:20]:<20} {(r.live_zone or '-')[:20]:<20} {r.parent_zone[:12]:<12} "
              f"{r.key_sha256[:16]:<16} {r.state:<10} {r.detail}")
    return EXIT_OK
