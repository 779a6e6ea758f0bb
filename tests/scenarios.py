"""What the end-to-end clusters of real Icinga 2 nodes share (tests/e2e/test_e2e_icinga.py's,
test_ha_zone.py's): scenarios that build on each other (one is not run once an earlier one
failed: it would fail for that reason, and hide it) and the phase times each records for the
module's report; the sidecars' secrets and processes; stopping all of it by PID."""
from __future__ import annotations

import secrets
from contextlib import contextmanager
from pathlib import Path

import pytest

from statesync.snapshot.crypto import format_key, generate_key

from . import icinga
from .sidecar import Sidecar
from .support import REPO


class Scenarios:
    """Mixed into a module's cluster; ``label`` names the Icinga 2 version in the printed times."""

    tag = "e2e"
    label = ""

    def __init__(self) -> None:
        self.times: dict[str, dict] = {}
        self.failed = ""

    @contextmanager
    def scenario(self, key: str):
        if self.failed:
            pytest.fail(f"not run: {self.failed!r} failed before, and this scenario builds on it", pytrace=False)
        try:
            yield
        except BaseException:
            self.failed = key
            raise

    def record(self, key: str, **times: float) -> None:
        self.times[key] = {k: round(v, 2) for k, v in times.items()}
        print(f"{self.tag} {self.label} {key}: " + ", ".join(f"{k}={v:.2f}s" for k, v in times.items()))

    # Set by the module's cluster: what its processes carry in icinga.SESSION_VAR, the directory
    # below which its nodes mount, its Consul, KV prefix and encryption key file.
    session = ""
    base: Path
    consul = None
    prefix = ""
    key_file: Path
    runs = 0

    def write_secrets(self) -> None:
        """Under ``base``: the sidecars' encryption key (private keys are encrypted before they
        reach Consul, as in production) and the password of the master sidecar's Icinga API user
        for enrolment (config package, endpoints)."""
        self.key_file = self.base / "statesync.key"
        self.key_file.write_text(format_key(generate_key()) + "\n")
        self.key_file.chmod(0o600)
        self.enrol_password = secrets.token_hex(12)
        self.enrol_password_file = self.base / "enrol-api-password"
        self.enrol_password_file.write_text(self.enrol_password + "\n")
        self.enrol_password_file.chmod(0o600)

    def sidecar_process(self, node, role: str, **env: str) -> Sidecar:
        """One ``statesync run`` for ``node`` as in production (private keys encrypted), its root the
        host path of the node's lib/, its log numbered by the module's runs."""
        self.runs += 1
        log = self.base / f"sidecar-{node.cn}-{self.runs}.log"
        return Sidecar.start(self.consul.addr, self.prefix, node.lib, log, node.cn, role, cwd=REPO, plaintext=False,
                             encryption_key_file=self.key_file, **{icinga.SESSION_VAR: self.session}, **env)

    def stop_all(self, sidecars, nodes) -> list[str]:
        """Stop everything the module started, by PID, even after a failure; return what went wrong."""
        problems = []
        for s in sidecars:
            try:
                if s.proc.poll() is None and s.stop() != 0:
                    problems.append(f"sidecar {s.log.name} exited {s.proc.returncode}: {s.tail(5)}")
            except Exception as exc:  # keep cleaning up
                problems.append(f"sidecar {s.log.name}: {exc!r}")
        for node in nodes:
            try:
                killed = node.stop()
                if killed:
                    print(f"{node.cn}: Icinga 2 did not stop on SIGTERM; killed {killed}")
            except Exception as exc:
                problems.append(f"{node.cn}: {exc!r}")
        # Anything else of this session (a restart command the guard fired, say): the suite lost track of it.
        left = icinga.pids_with(icinga.SESSION_VAR, self.session)
        if left:
            icinga.terminate(left, timeout=10)
            problems.append(f"processes left over, now stopped: {left}")
        survivors = icinga.pids_with(icinga.SESSION_VAR, self.session)
        if survivors:
            problems.append(f"processes that would not die: {survivors}")
        # Each node's namespace ends with its last process; none of its mounts may show on the host.
        with open("/proc/self/mountinfo") as fh:
            leaked = [line.strip() for line in fh if str(self.base) in line]
        if leaked:
            problems.append(f"mounts leaked to the host: {leaked}")
        return problems


class TimesReport:
    """Prints a module's scenario times at the end of the run (with or without -s)."""

    def __init__(self, scenarios: Scenarios, path: Path, title: str):
        self.scenarios, self.path, self.title = scenarios, path, title

    def pytest_terminal_summary(self, terminalreporter):
        times = self.scenarios.times
        if not times:
            return
        terminalreporter.write_sep("-", f"{self.title}, {self.scenarios.label}")
        for key, t in times.items():
            terminalreporter.write_line(f"{key}: " + ", ".join(f"{k}={v:.2f}s" for k, v in t.items()))
        terminalreporter.write_line(f"{self.scenarios.tag} summary: " + "; ".join(
            f"{key} {t.get('total', 0):.1f}s" for key, t in times.items()) + f" (written to {self.path})")
