"""What the tests of the compose and Swarm stacks share: the stacks' directory as an operator
prepares it, commands inside the containers, the Icinga API probe and the phase-time report."""
from __future__ import annotations

import os
import secrets as secrets_module
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from .engine import ROOT, Compose, docker
from .support import clean_env, statesync_cmd

COMPOSE_DIR = ROOT / "compose"

# Runs inside an icinga2 container: the API user's password never leaves it. It is read on
# every try, since on a first start node setup writes api-users.conf only once statesync is
# ready; ``want`` is matched as a plain string, JSON quotes included.
ROOT_PASSWORD = ("sed -n 's/^[[:space:]]*password[[:space:]]*=[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p'"
                 " /etc/icinga2/conf.d/api-users.conf 2>/dev/null | head -1")
# The sidecar's API user, which icinga-start.sh writes on every master: a second master of an
# HA zone has no root user (node setup makes one with --master only).
STATESYNC_PASSWORD = "tr -d '\\r\\n' < /run/secrets/icinga_api_password"
API = """
want={want}
for i in $(seq 1 {tries}); do
  pw=$({password})
  out=$(curl -sk -m 3 -u "{user}:$pw" -w ' HTTP%{{http_code}}' https://localhost:5665{path})
  case "$out" in *"$want"*) echo "$out" | tail -c 400; exit 0;; esac
  sleep 1
done
echo "last answer: $out" | tail -c 600 >&2; exit 1
"""


def prepare_stack_dir(work: Path, names: tuple[str, ...]) -> Path:
    """Copy the named files of compose/ into ``work`` with the secrets compose/secrets/README.md
    asks for (root-owned, group 5665, 0640): the encryption key, an empty Consul token and the
    password of the master sidecar's Icinga API user."""
    work.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(COMPOSE_DIR / name, work / name)
    secrets = work / "secrets"
    secrets.mkdir()
    subprocess.run(statesync_cmd("keygen", "--out", str(secrets / "statesync_key"), "--group", "5665"),
                   check=True, capture_output=True, env=clean_env(), timeout=60)
    write_secret(secrets / "consul_token", "")
    write_secret(secrets / "icinga_api_password", secrets_module.token_hex(16) + "\n")
    return secrets


def write_secret(path: Path, text: str) -> None:
    path.write_text(text)
    os.chown(path, 0, 5665)
    path.chmod(0o640)


def wait(pred, timeout: float, what: str, details=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s\n{details()[-6000:]}")
        time.sleep(1)


def sh(stack: Compose, service: str, script: str, timeout: float = 120, check: bool = True) -> str:
    """``script`` in the service's container; its stdout. A failure names the stack's logs."""
    proc = stack.exec(service, "sh", "-c", script, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{service}: exit {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}\n"
                             f"--- logs ---\n{stack.logs()[-6000:]}")
    return proc.stdout


def api(stack: Compose, path: str, want: str, tries: int = 90, user: str = "root") -> str:
    """Poll the Icinga API of the stack's icinga2 container until the answer holds ``want``, as
    root or as ``statesync``, the master sidecar's user."""
    password = STATESYNC_PASSWORD if user == "statesync" else ROOT_PASSWORD
    script = API.format(tries=tries, path=path, want=shlex.quote(want), user=user, password=password)
    return sh(stack, "icinga2", script, timeout=tries * 5 + 30)


def rotate_master_ca(master: Compose, cn: str) -> str:
    """The master's operator replaces its CA (same TicketSalt), restarts Icinga 2 and records the
    decision with `statesync accept-ca`; returns once the sidecar has published the new CA, the
    new CA's fingerprint as `openssl x509 -fingerprint -sha256` prints it."""
    sh(master, "icinga2", f"""set -e; cd /var/lib/icinga2
        mv ca /tmp/ca.old
        icinga2 pki new-ca >/dev/null
        icinga2 pki new-cert --cn {cn} --key /tmp/m.key --csr /tmp/m.csr >/dev/null
        icinga2 pki sign-csr --csr /tmp/m.csr --cert /tmp/m.crt >/dev/null
        cp /tmp/m.key certs/{cn}.key; cp /tmp/m.crt certs/{cn}.crt; cp ca/ca.crt certs/ca.crt""")
    docker("restart", "-t", "20", master.container_id("icinga2"), timeout=120)
    api(master, "/v1/status", "HTTP200")
    accept = master.exec("statesync", "statesync", "accept-ca", "--yes", "--reason", "CA rotation drill",
                         check=False, timeout=60)
    assert accept.returncode == 0, accept.stdout + accept.stderr
    wait(lambda: master.exec("statesync", "statesync", "check-ca", check=False, timeout=60).returncode == 0,
         120, "the master sidecar did not publish the new CA", master.logs)
    return sh(master, "icinga2", "openssl x509 -noout -fingerprint -sha256 -in /var/lib/icinga2/ca/ca.crt")


class PhaseTimes:
    """Prints each scenario's phase times at the end of the run (with or without -s)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.phases: dict[str, dict[str, float]] = {}

    def scenario(self, name: str) -> dict[str, float]:
        return self.phases.setdefault(name, {})

    def pytest_terminal_summary(self, terminalreporter):
        if not any(self.phases.values()):
            return
        terminalreporter.write_sep("-", self.title)
        for scenario, phases in self.phases.items():
            terminalreporter.write_line(f"{scenario}: " + ", ".join(f"{k}={v:.1f}s" for k, v in phases.items()))
