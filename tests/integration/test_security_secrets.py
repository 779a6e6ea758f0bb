"""Secrets stay secret: the ACL token comes from a file or the config, never from a command line,
and it appears in no output, log or error of statesync; the log redaction drops secret-named values."""
from __future__ import annotations

import io
import json
import subprocess
import time
import uuid

import pytest
import structlog

from statesync import config
from statesync.cli import parsers
from statesync.sidecar import logs

from ..acl_support import PREFIX, assert_no_secret, one_error_line, run_cli, token_file
from ..sidecar import Sidecar, statesync_env
from ..support import clean_env, make_tree, statesync_cmd, tree_state, wait_for


def _recognisable() -> str:
    """A token that is easy to find in output: a UUID (Consul wants one) with a fixed head."""
    return "5ec12e70-" + str(uuid.uuid4())[9:]


def test_no_command_line_flag_takes_the_token_itself():
    parser = parsers.build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    assert set(subparsers) >= {"backup", "restore", "snapshots", "run", "ready"}
    talks_to_consul = {"backup", "restore", "snapshots", "run", "rekey", "check-ca", "accept-ca", "pin-parent",
                       "pin", "unpin", "forget", "gc", "enrol", "satellites", "verify", "ls", "nodes", "diff"}
    for name, sub in subparsers.items():
        options = {opt for action in sub._actions for opt in action.option_strings}
        expected = {"--consul-token-file"} if name in talks_to_consul else set()
        assert {opt for opt in options if "token" in opt} == expected, name
        assert all(action.dest != "consul_token" for action in sub._actions), name
    assert "consul.token" not in parsers._FLAG_SETTINGS.values()
    assert "consul.token_file" in parsers._FLAG_SETTINGS.values()


def test_the_token_is_taken_from_the_token_file_or_the_config_file_and_never_shown_in_a_repr(tmp_path):
    secret = _recognisable()
    path = token_file(tmp_path, secret)
    assert path.stat().st_mode & 0o777 == 0o600
    from_file = config.load({"node": "n1"}, env={"CONSUL_HTTP_TOKEN_FILE": str(path)})
    assert from_file.consul.token == secret
    toml = tmp_path / "statesync.toml"
    toml.write_text(f'node = "n1"\n[consul]\ntoken = "{secret}"\n')
    from_config = config.load(config_file=str(toml), env={})
    assert from_config.consul.token == secret
    toml.write_text(f'node = "n1"\n[consul]\ntoken_file = "{path}"\n')
    assert config.load(config_file=str(toml), env={}).consul.token == secret
    for cfg in (from_file, from_config):
        assert secret not in repr(cfg) and secret not in repr(cfg.consul)


@pytest.mark.consul
def test_the_token_appears_in_no_output_of_backup_snapshots_restore_or_a_denied_call(acl_consul, tmp_path):
    secret = acl_consul.token("satellite.hcl", "secret-sat", secret=_recognisable())
    reader = acl_consul.token("restore.hcl", "secret-sat", secret=_recognisable())
    unknown = _recognisable()  # a token Consul has never seen
    acl_consul.secrets.append(unknown)
    root = tmp_path / "root"
    make_tree(root)
    runs = []

    def run(token, *args, root=root, **extra):
        # debug logs, JSON and console renderings: the most any run can print
        proc = run_cli(acl_consul, tmp_path, token, *args, node="secret-sat", root=root,
                       STATESYNC_LOG_LEVEL="debug", **extra)
        runs.append(proc)
        return proc

    assert run(secret, "backup").returncode == 0
    assert run(secret, "backup", STATESYNC_LOG_FORMAT="console").returncode == 0
    assert run(secret, "snapshots").returncode == 0
    assert run(secret, "snapshots", "--json").returncode == 0
    assert run(secret, "restore", "--dry-run").returncode == 0
    assert run(reader, "restore", root=tmp_path / "restored").returncode == 0
    assert tree_state(tmp_path / "restored") == tree_state(root)
    # denied: another node's prefix (read), a read-only token backing up a change (write), an unknown token
    (tmp_path / "restored/icinga2.state").write_bytes(b"changed")
    denied = [run(secret, "restore", "--node", "master1", root=tmp_path / "x"),
              run(secret, "backup", "--node", "master1"),
              run(reader, "backup", root=tmp_path / "restored"),
              run(unknown, "snapshots")]
    assert [proc.returncode for proc in denied] == [1, 1, 1, 1]
    assert "lacks read permission" in one_error_line(denied[0])
    assert "lacks write permission" in one_error_line(denied[2])
    assert "does not know the ACL token" in one_error_line(denied[3])
    assert len(runs) == 10
    for proc in runs:  # run_cli checked each already; this says so where it is read
        assert_no_secret(proc, [secret, reader, unknown])


@pytest.mark.consul
def test_the_daemon_logs_never_carry_the_token(acl_consul, tmp_path, request):
    secret = acl_consul.token("satellite.hcl", "secret-daemon", secret=_recognisable())
    root = tmp_path / "root"
    make_tree(root)
    env = statesync_env(acl_consul.addr, PREFIX, root, "secret-daemon", CONSUL_HTTP_TOKEN_FILE=token_file(tmp_path, secret),
                        log_level="debug", debounce="0.1")
    sidecar = Sidecar(env, tmp_path / "sidecar.log", "satellite")
    request.addfinalizer(sidecar.kill)
    # Ready however long a loaded machine takes; the wait only stops a hang.
    wait_for(lambda: (root / ".statesync-ready").exists() or not sidecar.alive(), 120,
             what="the satellite's sidecar ready")
    (root / "icinga2.state").write_bytes(b"a change the daemon commits")
    time.sleep(1.0)
    sidecar.stop(60)
    out = sidecar.output()
    assert '"event": "ready"' in out, out[-2000:]  # it did talk to Consul with the token
    assert secret not in out and secret.replace("-", "") not in out


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    logs.configure("json", "debug", stream)
    yield stream
    structlog.reset_defaults()


def test_log_redaction_drops_values_of_keys_named_like_token_password_or_secret(captured_logs):
    secrets = {"token": "t-1", "consul_token": "t-2", "X-Consul-Token": "t-3", "password": "p-1",
               "db_password": "p-2", "secret": "s-1", "client_secret": "s-2", "private_key": "k-1",
               "authorization": "a-1"}
    structlog.get_logger("test").info("connecting", node="master1", **secrets)
    event = json.loads(captured_logs.getvalue())
    for key, value in secrets.items():
        assert event[key] == "[redacted]", key
        assert value not in captured_logs.getvalue()
    assert event["node"] == "master1" and event["event"] == "connecting"


def test_an_unreadable_token_file_is_named_in_one_line_without_any_token(tmp_path):
    missing = tmp_path / "no-such-token"
    proc = subprocess.run(statesync_cmd("snapshots"), capture_output=True, text=True, timeout=60,
                          env={**clean_env(), "CONSUL_HTTP_TOKEN_FILE": str(missing),
                               "STATESYNC_NODE": "n1", "CONSUL_HTTP_ADDR": "127.0.0.1:1"})
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "consul.token_file" in line and str(missing) in line
