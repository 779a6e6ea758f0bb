"""Helpers shared by the CA guard tests: publishing a CA in the real Consul, the marker a
command trigger writes, and a satellite's guard settings (the sidecar: tests/sidecar.py)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from statesync.consul.store import Store
from statesync.disk import QUARANTINE_DIR
from statesync.pki import cadoc

# The command trigger of these tests: append the wall-clock time to a marker file.
APPEND = "import sys, time; open(sys.argv[1], 'a').write(f'{time.time()}\\n')"


def publish(store: Store, key: str, ca, node: str = "master1", snapshot: str = "test") -> int:
    """Publish ``ca`` as a master would; return the key's new ModifyIndex."""
    doc = cadoc.from_pem(ca.pem, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), node, snapshot)
    store.put(key, cadoc.encode(doc))
    return store.get(key).modify_index


def fired(marker: Path) -> int:
    """How often the command trigger ran."""
    try:
        return len(marker.read_text().splitlines())
    except FileNotFoundError:
        return 0


def quarantines(root: Path) -> list[Path]:
    base = root / QUARANTINE_DIR
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []


def satellite_env(marker: Path, **extra: str) -> dict:
    """The guard settings of a satellite whose command trigger appends to ``marker``."""
    env = {"STATESYNC_GUARD_TRIGGER": "command",
           "STATESYNC_GUARD_COMMAND": json.dumps([sys.executable, "-c", APPEND, str(marker)]),
           "STATESYNC_GUARD_CONFIRMATIONS": "2", "STATESYNC_GUARD_CONFIRM_INTERVAL": "0.2",
           "STATESYNC_GUARD_CHECK_INTERVAL": "1"}
    env.update(extra)
    return env
