"""Helpers shared by the CA guard tests: publishing a CA in the real Consul, the marker a
command trigger writes, and a satellite sidecar process."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from statesync.consul.store import Store
from statesync.disk import QUARANTINE_DIR
from statesync.pki import cadoc

from .support import clean_env, statesync_cmd, stop_process

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


class SidecarProcess:
    """``statesync run`` as a real process with JSON logs in a file; ``env`` adds STATESYNC_* settings."""

    def __init__(self, addr: str, prefix: str, root: Path, node: str, role: str, env: dict | None = None):
        full = clean_env()
        full.update(CONSUL_HTTP_ADDR=addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
                    STATESYNC_NODE=node, STATESYNC_LOG_FORMAT="json",
                    STATESYNC_ALLOW_PLAINTEXT_SECRETS="true", **(env or {}))
        self.log = root.parent / f"sidecar-{node}.log"
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(statesync_cmd("run", "--role", role), env=full,
                                         stdout=fh, stderr=subprocess.STDOUT)

    def events(self, name: str | None = None) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if name is None or e.get("event") == name:
                out.append(e)
        return out

    def stop(self, timeout: float = 15) -> int:
        return stop_process(self.proc, timeout)


def satellite_env(marker: Path, **extra: str) -> dict:
    env = {"STATESYNC_GUARD_TRIGGER": "command",
           "STATESYNC_GUARD_COMMAND": json.dumps([sys.executable, "-c", APPEND, str(marker)]),
           "STATESYNC_GUARD_CONFIRMATIONS": "2", "STATESYNC_GUARD_CONFIRM_INTERVAL": "0.2",
           "STATESYNC_GUARD_CHECK_INTERVAL": "1"}
    env.update(extra)
    return env
