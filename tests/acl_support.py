"""A Consul agent with ACLs on and default deny, tokens made from config/acl/*.hcl, and the CLI run with them."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .support import REPO, ConsulAgent, clean_env, kv_ready, plain_lines, statesync_cmd

ACL_DIR = REPO / "config/acl"
AGENT_NODE = "statesync-acl-test"  # the Consul node name: AGENT in the policy files
PREFIX = "statesync/icinga2"  # the prefix the policy files are written for
_names = itertools.count()


class AclConsul:
    """A dev agent with ``default_policy = "deny"``; ``master`` is its bootstrap (management) token."""

    def __init__(self, binary: str, workdir: str):
        self.master = str(uuid.uuid4())
        acl = ('acl { enabled = true default_policy = "deny" enable_token_persistence = true '
               f'tokens {{ master = "{self.master}" }} }}')
        self.agent = ConsulAgent(binary, dev=True, workdir=workdir, extra=["-node", AGENT_NODE, "-hcl", acl],
                                 ready=lambda a: kv_ready(f"http://{a.addr}", self.master))
        self.secrets: list[str] = [self.master]

    @property
    def addr(self) -> str:
        return self.agent.addr

    def start(self) -> "AclConsul":
        self.agent.start()
        return self

    def stop(self) -> None:
        self.agent.cleanup()

    def api(self, method: str, path: str, token: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One HTTP call to the agent; returns (status, body) for errors as well."""
        req = urllib.request.Request(f"http://{self.addr}{path}", data=body, method=method,
                                     headers={"X-Consul-Token": token})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def token(self, policy_file: str, node: str, secret: str | None = None, cn: str | None = None) -> str:
        """Create a policy from config/acl/<policy_file> for ``node`` and a token holding it; return its secret.

        The placeholders are replaced as config/acl/README.md's sed does: NODE, AGENT, then
        SATELLITE_CN by ``cn`` (default: the node name).
        """
        rules = render(policy_file, node, node if cn is None else cn)
        name = f"{policy_file.removesuffix('.hcl')}-{node}-{next(_names)}"
        code, out = self.api("PUT", "/v1/acl/policy", self.master, json.dumps({"Name": name, "Rules": rules}).encode())
        assert code == 200, out
        body = {"Description": name, "Policies": [{"Name": name}]}
        if secret:
            body["SecretID"] = secret
        code, out = self.api("PUT", "/v1/acl/token", self.master, json.dumps(body).encode())
        assert code == 200, out
        secret_id = json.loads(out)["SecretID"]
        self.secrets.append(secret_id)
        return secret_id


def render(policy_file: str, node: str, cn: str) -> str:
    """config/acl/<policy_file> with its placeholders replaced, in the order of the README's sed."""
    text = (ACL_DIR / policy_file).read_text()
    return text.replace("NODE", node).replace("AGENT", AGENT_NODE).replace("SATELLITE_CN", cn)


def token_file(directory: Path, token: str) -> Path:
    """Write ``token`` to a fresh 0600 file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"token-{next(_names)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return path


def run_cli(consul: AclConsul, tmp: Path, token: str, *args: str, node: str, root: Path,
            **extra: str) -> subprocess.CompletedProcess:
    """Run ``python -m statesync`` with the token in CONSUL_HTTP_TOKEN_FILE.

    Every run is checked: no token this agent knows appears in its stdout or stderr.
    """
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.addr, CONSUL_HTTP_TOKEN_FILE=str(token_file(tmp / "tokens", token)),
               STATESYNC_NODE=node, STATESYNC_ROOT=str(root), STATESYNC_PREFIX=PREFIX,
               STATESYNC_LOG_FORMAT="json",
               STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    env.update(extra)
    proc = subprocess.run(statesync_cmd(*args), env=env, capture_output=True, text=True, timeout=60)
    assert_no_secret(proc, consul.secrets)
    return proc


def assert_no_secret(proc: subprocess.CompletedProcess, secrets: list[str]) -> None:
    out = proc.stdout + proc.stderr
    for secret in secrets:
        assert secret not in out, "a token appeared in statesync's output"
        assert secret.replace("-", "") not in out, "a token appeared in statesync's output"


def _is_log_line(line: str) -> bool:
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, dict) and "event" in event


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line of stderr that is not a JSON log event: the error, and nothing else (no traceback)."""
    lines = [line for line in plain_lines(proc.stderr) if not _is_log_line(line)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("statesync: error: "), lines[0]
    return lines[0]
