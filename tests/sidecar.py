"""The environment a test gives each statesync process it starts, and ``statesync run`` as one.

Every test that starts statesync builds its environment with :func:`statesync_env` and every
sidecar it starts is a :class:`Sidecar`: one place says which settings a test's statesync gets
(none of the runner's CONSUL_* or STATESYNC_* variables, JSON logs, plain-text secrets allowed
unless a key is the point) and how a sidecar is started, watched and stopped (by its pid).
"""
from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from statesync.schema import READY_FILE_NAME

from .support import clean_env, statesync_cmd, stop_process, wait_for


def statesync_env(addr: str | Sequence[str], prefix: str, root: Path | str, node: str = "node1", *,
                  log_format: str = "json", plaintext: bool = True, **variables: object) -> dict[str, str]:
    """:func:`tests.support.clean_env` with what a statesync of a test needs: its Consul (one
    address as CONSUL_HTTP_ADDR, a list as STATESYNC_CONSUL_ADDR), prefix, root and node, JSON logs
    and, with ``plaintext``, STATESYNC_ALLOW_PLAINTEXT_SECRETS. ``variables`` add to it: a name in
    capitals is the variable itself (``CONSUL_HTTP_TOKEN=...``), a lower-case one a setting
    (``debounce=0.1`` is STATESYNC_DEBOUNCE)."""
    env = clean_env()
    if isinstance(addr, str):
        env["CONSUL_HTTP_ADDR"] = addr
    else:
        env["STATESYNC_CONSUL_ADDR"] = ",".join(addr)
    env.update(STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root), STATESYNC_NODE=node, STATESYNC_LOG_FORMAT=log_format)
    if plaintext:
        env["STATESYNC_ALLOW_PLAINTEXT_SECRETS"] = "true"
    env.update({(name if name.isupper() else f"STATESYNC_{name.upper()}"): str(value)
                for name, value in variables.items()})
    return env


class Sidecar:
    """``statesync run --role <role> <args>`` as a real process with ``env``, stdout and stderr
    appended to ``log``. It runs in ``cwd``, by default the log's directory: not a checkout, where
    ``python -m`` would import the statesync there instead of PYTHONPATH's."""

    def __init__(self, env: dict[str, str], log: Path, role: str = "master", args: Sequence[str] = (),
                 cwd: Path | str | None = None):
        self.env, self.log = env, log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(statesync_cmd("run", "--role", role, *args), env=env,
                                         cwd=log.parent if cwd is None else cwd,
                                         stdout=fh, stderr=subprocess.STDOUT)

    @classmethod
    def start(cls, addr: str | Sequence[str], prefix: str, root: Path, log: Path, node: str = "node1",
              role: str = "master", args: Sequence[str] = (), cwd: Path | str | None = None,
              ready_beside_log: bool = False, plaintext: bool = True, **variables: object) -> Sidecar:
        """A sidecar with :func:`statesync_env`'s environment for these; ``variables`` add to it.
        With ``ready_beside_log`` its readiness marker is ``<log>.ready``, out of the root."""
        if ready_beside_log:
            variables["ready_file"] = log.with_suffix(".ready")
        return cls(statesync_env(addr, prefix, root, node, plaintext=plaintext, **variables), log, role, args, cwd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time (and raise). Returns the exit code."""
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, text: str) -> int:
        return self.output().count(text)

    def tail(self, lines: int = 20) -> str:
        return f"--- last lines of {self.log.name}:\n" + "\n".join(self.output().splitlines()[-lines:])

    def events(self, name: str | None = None) -> list[dict]:
        """The JSON log events called ``name`` (all of them without), in order."""
        out = []
        for line in self.output().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                out.append(event)
        return out

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        """Until ``text`` is in the log; the sidecar exiting first fails at once."""
        def seen():
            assert self.alive(), f"sidecar exited {self.proc.returncode}: {self.output()[-2000:]}"
            return text in self.output()
        wait_for(seen, timeout, what=f"{text} in the sidecar's log", details=lambda: self.output()[-2000:])

    @property
    def ready_file(self) -> Path:
        """Where this sidecar writes its readiness marker: STATESYNC_READY_FILE, else in its root."""
        given = self.env.get("STATESYNC_READY_FILE")
        return Path(given) if given else Path(self.env["STATESYNC_ROOT"]) / READY_FILE_NAME

    def wait_ready(self, timeout: float) -> dict:
        """The readiness marker this process wrote (as a compose healthcheck waits for it); the
        sidecar exiting first fails at once."""
        def marker():
            if not self.alive():
                raise AssertionError(f"sidecar exited {self.proc.returncode}\n{self.tail()}")
            try:
                doc = json.loads(self.ready_file.read_text())
            except (OSError, ValueError):
                return None
            return doc if doc.get("pid") == self.pid else None
        return wait_for(marker, timeout, what=f"readiness marker {self.ready_file}", details=self.tail, step=0.05)

    def probe_ready(self, timeout: float, cwd: Path | str | None = None) -> int:
        """``statesync ready``, the readiness probe, with this sidecar's settings: its exit code."""
        return subprocess.run(statesync_cmd("ready"), env=self.env, cwd=self.log.parent if cwd is None else cwd,
                              capture_output=True, timeout=timeout).returncode
