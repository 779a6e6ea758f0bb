"""Every command, fed hostile input, fails with one line and one of errors.py's exit codes, never a traceback.

Each case calls the CLI's ``main`` in this process (tests/cli_runner.py), a few milliseconds
where a spawn costs a second; the cases of ``run``, which starts a daemon (signal handlers,
threads, an HTTP server), run ``python -m statesync`` as a real process, and are the smoke tests
that no traceback escapes the process itself. Where a command needs Consul to get
as far as the hostile input, the session agent serves it; where the failure is the point, an
unused loopback port stands in.

``demo`` is left out: it reads nothing of the user's (no root, no Consul, no key, no flags but
the log ones, which every command here shares through the same parser and config loader), and
each run of it starts a Consul dev agent of its own, tens of seconds; test_health_demo.py runs it.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

import pytest

from statesync.errors import EXIT_FAILURE, EXIT_OK, EXIT_RESTART, EXIT_USAGE
from statesync.snapshot.crypto import format_key

from ..cli_runner import run_cli
from ..support import clean_env, free_ports, http_get, statesync_cmd, stop_process, wait_for

EXIT_CODES = {EXIT_FAILURE, EXIT_USAGE, EXIT_RESTART}
BAD_UTF8 = b"\xff\xfe\xc3\x28 not text"
TOKEN = "h0stile-7c1e-4f00-9a9a-0123456789ab"
KEY = format_key(bytes(range(32)))


@dataclass
class Files:
    root: str        # a directory holding a file: a root statesync may read
    target: str      # an empty directory to restore into
    plain: str       # a regular file, where a directory is expected
    dir: str         # a directory, where a file is expected
    missing: str     # nothing there
    bad_toml: str    # a config file that is not UTF-8
    bad_key: str     # an encryption key file that is not UTF-8
    bad_token: str   # a token file that is not UTF-8 (the token's own bytes first)
    junk_key: str    # text, but not a key
    good_key: str    # a key from keygen's format
    new_key: str     # where keygen may write
    dead: str        # a loopback address nobody listens on


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    base = tmp_path_factory.mktemp("hostile")
    (base / "root").mkdir()
    (base / "root/icinga2.state").write_text("state")
    (base / "target").mkdir()
    (base / "dir").mkdir()
    (base / "plain").write_text("a file")
    (base / "bad.toml").write_bytes(b'keep = "' + BAD_UTF8 + b'"\n')
    (base / "bad.key").write_bytes(b"statesync-key-v1:" + BAD_UTF8)
    (base / "bad.token").write_bytes(TOKEN.encode() + BAD_UTF8)
    (base / "junk.key").write_text("not a key at all\n")
    (base / "good.key").write_text(KEY + "\n")
    (port,) = free_ports(1)
    return Files(*(str(base / n) for n in ("root", "target", "plain", "dir", "missing", "bad.toml", "bad.key",
                                            "bad.token", "junk.key", "good.key", "new.key")),
                 dead=f"127.0.0.1:{port}")


# What each command is, before the hostile part is added. Node, prefix and Consul come from the
# environment, since keygen and ready take no such flags.
COMMANDS = {
    "backup": lambda f: ["backup", "--root", f.root],
    "restore": lambda f: ["restore", "--root", f.target],
    "ready": lambda f: ["ready", "--root", f.root],
    "keygen": lambda f: ["keygen", "--out", f.new_key],
    "rekey": lambda f: ["rekey", "--new-key-file", f.good_key],
    "snapshots": lambda f: ["snapshots"],
    "run": lambda f: ["run", "--role", "master", "--root", f.root],
    "check-ca": lambda f: ["check-ca", "--root", f.root],
}

# Every command loads the config the same way: each of these goes to every command.
EVERY_COMMAND = {
    "a config file that is not UTF-8": (lambda f: ["--config", f.bad_toml], {}),
    "a config file that is a directory": (lambda f: ["--config", f.dir], {}),
    "a config file that does not exist": (lambda f: ["--config", f.missing], {}),
    "STATESYNC_CONFIG naming a file that is not UTF-8": (lambda f: [], {"STATESYNC_CONFIG": "bad_toml"}),
    "a key file that is not UTF-8": (lambda f: [], {"STATESYNC_ENCRYPTION_KEY_FILE": "bad_key"}),
    "a key file that is a directory": (lambda f: [], {"STATESYNC_ENCRYPTION_KEY_FILE": "dir"}),
    "a token file that is not UTF-8": (lambda f: [], {"CONSUL_HTTP_TOKEN_FILE": "bad_token"}),
    "an unknown flag": (lambda f: ["--no-such-flag"], {}),
    "an empty log level": (lambda f: ["--log-level", ""], {}),
    "STATESYNC_KEEP=abc": (lambda f: [], {"STATESYNC_KEEP": "abc"}),
    "STATESYNC_CHUNK_SIZE=-1": (lambda f: [], {"STATESYNC_CHUNK_SIZE": "-1"}),
}

# More bad settings from the environment: each goes to one command in turn.
ENVIRONMENT = [
    {"STATESYNC_DEBOUNCE": "nan"}, {"STATESYNC_MAX_WAIT": "inf"}, {"STATESYNC_KEEP": "1e999"},
    {"STATESYNC_CHUNK_SIZE": "99999999999999999999999999"}, {"STATESYNC_HTTP_PORT": "-1"},
    {"STATESYNC_HEALTH_MAX_FAILURES": "0"}, {"STATESYNC_DEFAULT_EXCLUDES": "perhaps"},
    {"STATESYNC_CONSUL_ADDR": "http://[::1"}, {"STATESYNC_NODE": "bad node"}, {"STATESYNC_PREFIX": "a//b"},
    {"STATESYNC_ENCRYPTION_KEY": "not-a-key"}, {"STATESYNC_EXCLUDE": "/abs"}, {"CONSUL_HTTP_SSL": "maybe"},
    {"STATESYNC_LOG_FORMAT": "xml"}, {"STATESYNC_CONSUL_TIMEOUT": "-5"}, {"STATESYNC_ENCRYPT_ALL": "true"},
    {"CONSUL_HTTP_TOKEN": TOKEN + "\nX-Injected: 1"}, {"CONSUL_CACERT": "dir"},
]

# Hostile input of one command's own flags; "consul" marks the cases that need a live agent.
OWN = [
    ("backup", "an empty root", lambda f: ["--root", ""]),
    ("backup", "a root that is a file", lambda f: ["--root", f.plain]),
    ("backup", "a root that does not exist", lambda f: ["--root", f.missing]),
    ("backup", "a negative chunk size", lambda f: ["--chunk-size", "-1"]),
    ("backup", "a huge chunk size", lambda f: ["--chunk-size", "9" * 40]),
    ("backup", "an empty keep", lambda f: ["--keep", ""]),
    ("backup", "a negative keep", lambda f: ["--keep", "-5"]),
    ("backup", "a malformed exclude", lambda f: ["--exclude", "[z-a]"]),
    ("backup", "an absolute exclude", lambda f: ["--exclude", "/etc"]),
    ("backup", "an unreachable Consul", lambda f: []),
    ("restore", "an empty root", lambda f: ["--root", ""]),
    ("restore", "a snapshot id that is a path", lambda f: ["--snapshot", "../../etc/passwd"]),
    ("restore", "an empty snapshot id", lambda f: ["--snapshot", ""]),
    ("restore", "a root that is a file", lambda f: ["--root", f.plain], "consul"),
    ("restore", "a dry run into a root that is a file", lambda f: ["--dry-run", "--root", f.plain], "consul"),
    ("ready", "a wait of nan", lambda f: ["--wait", "nan"]),
    ("ready", "a negative wait", lambda f: ["--wait", "-1"]),
    ("ready", "an infinite wait", lambda f: ["--wait", "inf"]),
    ("ready", "a wait too large for a float", lambda f: ["--wait", "1e999"]),
    ("ready", "an empty wait", lambda f: ["--wait", ""]),
    ("ready", "a wait that is a word", lambda f: ["--wait", "soon"]),
    ("ready", "a root that is a file", lambda f: ["--root", f.plain]),
    ("keygen", "an output that is a directory", lambda f: ["--out", f.dir]),
    ("keygen", "an output in a missing directory", lambda f: ["--out", f.missing + "/key"]),
    ("keygen", "an empty output", lambda f: ["--out", ""]),
    ("rekey", "a new key file that is not UTF-8", lambda f: ["--new-key-file", f.bad_key]),
    ("rekey", "a new key file that is a directory", lambda f: ["--new-key-file", f.dir]),
    ("rekey", "a new key file that does not exist", lambda f: ["--new-key-file", f.missing]),
    ("rekey", "an empty new key file", lambda f: ["--new-key-file", ""]),
    ("rekey", "a new key file that holds no key", lambda f: ["--new-key-file", f.junk_key]),
    ("snapshots", "an unreachable Consul", lambda f: []),
    ("snapshots", "an empty node", lambda f: ["--node", ""]),
    ("snapshots", "an empty prefix", lambda f: ["--prefix", ""]),
    ("snapshots", "an empty Consul address", lambda f: ["--consul-addr", ""]),
    ("snapshots", "a Consul CA that is a directory", lambda f: ["--consul-cacert", f.dir]),
    ("run", "a debounce of nan", lambda f: ["--debounce", "nan"]),
    ("run", "an empty role", lambda f: ["--role", ""]),
    ("run", "an unknown conflict policy", lambda f: ["--on-conflict", "maybe"]),
    ("run", "a huge keep", lambda f: ["--keep", "9" * 40]),
    ("run", "a root that is a file", lambda f: ["--root", f.plain], "consul"),
    ("check-ca", "an unreachable Consul", lambda f: []),
    ("check-ca", "a root that is a file", lambda f: ["--root", f.plain], "consul"),
]


# keygen makes the encryption key, so it reads none of the settings about the key.
KEY_SETTINGS = {"STATESYNC_ENCRYPTION_KEY_FILE", "STATESYNC_ENCRYPTION_KEY", "STATESYNC_ENCRYPT_ALL"}


def _cases():
    for name, (extra, env) in EVERY_COMMAND.items():
        for command in COMMANDS:
            if command == "keygen" and KEY_SETTINGS & set(env):
                continue
            yield pytest.param(command, extra, env, False, id=f"{command}: {name}")
    for i, env in enumerate(ENVIRONMENT):
        command = list(COMMANDS)[i % len(COMMANDS)]
        if command == "keygen" and KEY_SETTINGS & set(env):
            command = "backup"
        yield pytest.param(command, lambda f: [], env, False, id=f"{command}: {' '.join(env)}={list(env.values())[0]!r}")
    for command, name, extra, *consul in OWN:
        # consul_addr starts the session agent for these by name, out of sight of conftest's markers
        yield pytest.param(command, extra, {}, bool(consul), id=f"{command}: {name}",
                           marks=[pytest.mark.consul] if consul else [])


@pytest.fixture
def consul_addr(request, files):
    """The session agent's address for the cases that need one (started on first use), else a dead port."""
    return request.getfixturevalue("consul").addr if request.node.callspec.params["needs_consul"] else files.dead


# The sidecar's cases run as a real process: see the module's docstring.
IN_PROCESS = [case for case in _cases() if case.values[0] != "run"]
IN_A_PROCESS = [case for case in _cases() if case.values[0] == "run"]


def _environment(files: Files, prefix: str, consul_addr: str, env: dict) -> dict:
    base = clean_env()
    base.update(STATESYNC_NODE="hostile", STATESYNC_PREFIX=prefix, CONSUL_HTTP_ADDR=consul_addr,
                STATESYNC_LOG_FORMAT="console", STATESYNC_HTTP_PORT="0")
    # Values naming a fixture file are given by its field name.
    base.update({k: getattr(files, v, v) for k, v in env.items()})
    return base


@pytest.mark.parametrize("command,extra,env,needs_consul", IN_PROCESS)
def test_a_hostile_input_gives_one_error_line_and_an_exit_code_never_a_traceback(
        files, prefix, consul_addr, command, extra, env, needs_consul):
    proc = run_cli(*COMMANDS[command](files), *extra(files), env=_environment(files, prefix, consul_addr, env))
    _check(proc, command, files)


@pytest.mark.parametrize("command,extra,env,needs_consul", IN_A_PROCESS)
def test_a_hostile_input_to_the_sidecar_gives_one_error_line_and_no_traceback_escapes_the_process(
        files, prefix, consul_addr, command, extra, env, needs_consul):
    argv = COMMANDS[command](files) + extra(files)
    proc = subprocess.run(statesync_cmd(*argv), env=_environment(files, prefix, consul_addr, env),
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    _check(proc, command, files)


def _check(proc: subprocess.CompletedProcess, command: str, files: Files) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "unexpected" not in proc.stderr, out  # "unexpected": main()'s net for bugs
    assert proc.returncode != EXIT_OK and proc.returncode in EXIT_CODES, (proc.returncode, out)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("statesync: error:")]
    assert len(errors) <= 1 and "usage:" not in proc.stderr, proc.stderr
    if command != "check-ca" and not (command == "ready" and proc.returncode == EXIT_FAILURE):
        assert errors, proc.stderr  # check-ca's verdicts and ready's "not ready" are answers, not errors
    assert TOKEN not in out and "X-Injected" not in out
    assert KEY.partition(":")[2] not in out
    assert not os.path.exists(files.new_key), "keygen must fail before writing"
    assert os.listdir(files.target) == [] or set(os.listdir(files.target)) <= {".statesync-lock"}


@pytest.mark.parametrize("wait", ["nan", "-1", "inf", "1e999", "", "soon"])
def test_ready_refuses_a_wait_that_is_not_a_finite_number_of_seconds_as_a_usage_error(tmp_path, wait):
    proc = run_cli("ready", "--root", str(tmp_path), "--wait", wait, env=dict(os.environ))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("statesync: error: argument --wait: "), proc.stderr




def _abort(port: int, payload: bytes) -> None:
    """Connect, send ``payload`` (part of a request, or nothing), then reset the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if payload:
            s.sendall(payload)
        time.sleep(0.05)  # let the server start reading before the reset reaches it


@pytest.mark.consul
def test_a_health_client_that_resets_its_connection_is_handled_quietly(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "icinga2.state").write_text("state")
    (port,) = free_ports(1)
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE="n1", STATESYNC_HTTP_PORT=str(port), STATESYNC_LOG_FORMAT="json",
               STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    log = tmp_path / "sidecar.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(statesync_cmd("run", "--role", "master"), env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30, "the sidecar ready", log.read_text, step=0.1)
        for payload in (b"GET /healthz HTTP/1.1\r\nHost: x", b"GET /metr", b"", b"GET /metrics HTTP/1.1\r\n\r\n"):
            _abort(port, payload)
        time.sleep(0.3)
        assert http_get(port, "/healthz")[0] == 200
        assert proc.poll() is None
    finally:
        assert stop_process(proc, 15) == 0
    out = log.read_text()
    assert "Traceback" not in out and "Exception occurred" not in out, out
