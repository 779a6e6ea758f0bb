"""The restart trigger's preflight: the guard never leaves a node without certificates because its
trigger cannot fire. Real Consul, a real Docker Engine stand-in on a unix socket, real processes,
and a real unprivileged user (uid 65534) where permissions matter."""
from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import structlog

from statesync import metrics
from statesync.cli.ca import check_ca
from statesync.consul.store import Store
from statesync.guard import accept_ca
from statesync.guard.ca_watch import Guard
from statesync.guard.logic import Verdict
from statesync.guard.triggers import (
    ApiTrigger,
    CommandTrigger,
    DockerTrigger,
    ExitTrigger,
    SignalTrigger,
    from_settings,
)

from ..certs import CERT_FILES, enrol, make_ca
from ..guardkit import fired, publish, quarantines
from ..support import REPO, clean_env, free_ports, statesync_cmd, stop_process, wait_for

NOBODY = 65534
# Appends a line to argv[1] when argv[2] exists; fails otherwise: a trigger we can break and mend.
FLAKY = ("import os, sys, time\n"
         "if not os.path.exists(sys.argv[2]): sys.exit('engine says no')\n"
         "open(sys.argv[1], 'a').write(f'{time.time()}\\n')")


class _Engine(http.server.BaseHTTPRequestHandler):
    """The Docker Engine API's inspect and restart for the containers in ``known``."""

    known: set = set()
    seen: list = []

    def do_GET(self):
        self._answer("json", 200, b'{"Id": "abc", "State": {"Running": true}}')

    def do_POST(self):
        self._answer("restart", 204, b"")

    def _answer(self, action: str, ok: int, body: bytes):
        self.seen.append((self.command, self.path))
        parts = self.path.split("/")
        if len(parts) == 4 and parts[1] == "containers" and parts[3] == action and parts[2] in self.known:
            code = ok
        else:
            code, body = 404, json.dumps({"message": f"No such container: {parts[2] if len(parts) > 2 else ''}"}
                                         ).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:  # the client may close as soon as it has a 204's headers
            self.wfile.write(body)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


@pytest.fixture
def engine():
    """A Docker Engine stand-in on a unix socket in a directory uid 65534 can reach."""
    base = Path(tempfile.mkdtemp(prefix="statesync-engine-"))
    os.chmod(base, 0o755)
    path = str(base / "docker.sock")

    class Handler(_Engine):
        known = {"icinga2-sat"}
        seen = []

    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield path, Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def satellite(make_cfg, tmp_path):
    guards = []

    def build(**overrides):
        settings = dict(role="satellite", node="sat1", guard__trigger="command",
                        guard__command=[sys.executable, "-c", FLAKY, str(tmp_path / "fired"), str(tmp_path / "ok")],
                        guard__confirmations=1, guard__confirm_interval=0.05, guard__check_interval=0.3,
                        guard__purge_window=600)
        settings.update(overrides)
        cfg = make_cfg(**settings)
        guard = Guard(cfg, Store(cfg.consul), from_settings(cfg.guard))
        guards.append(guard)
        return guard

    yield build
    for g in guards:
        g.stop()


def _changed_ca(guard) -> dict[str, bytes]:
    """Enrol the node under one CA and publish another key; return the enrolled files."""
    files = enrol(guard.root, make_ca())
    publish(guard.store, guard.key, make_ca())
    return files


def _certs_intact(guard, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (guard.root / "certs" / name).read_bytes() == data, name


# --- each trigger's check ------------------------------------------------------------------

def test_the_docker_check_inspects_the_container_and_names_an_unknown_one(engine):
    path, handler = engine
    assert DockerTrigger(path, "icinga2-sat", timeout=5).check() == ""
    assert "no container 'nope'" in DockerTrigger(path, "nope", timeout=5).check()
    assert ("GET", "/containers/icinga2-sat/json") in handler.seen
    assert not any(method == "POST" for method, _ in handler.seen)


def test_the_docker_check_names_a_missing_engine(tmp_path):
    assert "unreachable" in DockerTrigger(str(tmp_path / "no.sock"), "icinga2-sat", timeout=5).check()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to uid 65534")
def test_the_docker_check_of_a_user_without_the_sockets_group_names_the_group_to_add(engine):
    path, _ = engine
    os.chown(path, 0, 4242)
    os.chmod(path, 0o660)
    code = "import sys; from statesync.guard.triggers import DockerTrigger; print(DockerTrigger(sys.argv[1], 'icinga2-sat', 5).check())"
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, "-c", code, path], cwd=REPO, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    line = done.stdout.decode().strip()
    assert "permission denied" in line and "uid 65534" in line and "gid 4242" in line and "group_add" in line


def test_the_signal_check_wants_a_live_process_named_by_a_readable_pidfile(tmp_path):
    assert "cannot read pidfile" in SignalTrigger(str(tmp_path / "none.pid")).check()
    (tmp_path / "junk.pid").write_text("junk")
    assert "holds no pid" in SignalTrigger(str(tmp_path / "junk.pid")).check()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "live.pid").write_text(str(child.pid))
        assert SignalTrigger(str(tmp_path / "live.pid")).check() == ""
    finally:
        child.kill()
        child.wait(10)
    assert f"no process {child.pid}" in SignalTrigger(str(tmp_path / "live.pid")).check()


def test_the_command_check_wants_an_executable(tmp_path):
    assert CommandTrigger((sys.executable, "-c", "pass")).check() == ""
    assert CommandTrigger(("true",)).check() == ""
    assert "not found" in CommandTrigger((str(tmp_path / "missing"),)).check()
    assert "not found on PATH" in CommandTrigger(("no-such-program-statesync",)).check()
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert "not executable" in CommandTrigger((str(tmp_path / "script"),)).check()


def test_the_api_check_connects_without_sending_anything_and_the_exit_check_always_passes():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        assert ApiTrigger(f"https://127.0.0.1:{port}", "u", "secret", timeout=5).check() == ""
        conn, _ = listener.accept()
        conn.settimeout(0.5)
        try:
            assert conn.recv(100) == b""  # the check closed without a byte: no password sent
        finally:
            conn.close()
    finally:
        listener.close()
    closed = free_ports(1)[0]
    assert "unreachable" in ApiTrigger(f"https://127.0.0.1:{closed}", "u", "secret", timeout=5).check()
    assert ExitTrigger().check() == ""


# --- the guard with a trigger that cannot fire -----------------------------------------------


@pytest.mark.consul
def test_a_guard_whose_docker_trigger_fails_its_check_quarantines_nothing_and_keeps_its_certificates(
        satellite, engine):
    path, handler = engine
    handler.known = set()  # the engine answers, but the container is not there (yet)
    guard = satellite(guard__trigger="docker", guard__docker_socket=path, guard__docker_container="icinga2-sat")
    files = _changed_ca(guard)
    with structlog.testing.capture_logs() as logs:
        assert guard.check("test").verdict is Verdict.MISMATCH
        assert guard.check("test").verdict is Verdict.MISMATCH
    assert quarantines(guard.root) == []
    _certs_intact(guard, files)
    assert not any(method == "POST" for method, _ in handler.seen)
    kept = [e for e in logs if e["event"] == "restart trigger not usable; certificates kept, nothing quarantined"]
    assert len(kept) == 2 and all(e["log_level"] == "error" and "no container" in e["error"] for e in kept)
    assert metrics.REGISTRY.get_sample_value("statesync_guard_trigger_ready") == 0
    # The container appears: the next check purges, the window was never started.
    handler.known = {"icinga2-sat"}
    assert guard.check("test").verdict is Verdict.MISMATCH
    assert len(quarantines(guard.root)) == 1 and guard.state.fired == 1
    assert ("POST", "/containers/icinga2-sat/restart") in handler.seen
    assert metrics.REGISTRY.get_sample_value("statesync_guard_trigger_ready") == 1


@pytest.mark.consul
def test_a_failing_trigger_check_is_logged_once_at_start_and_its_recovery_is_noticed(satellite, tmp_path):
    guard = satellite(guard__command=[str(tmp_path / "restart-icinga")])
    ca = make_ca()
    enrol(guard.root, ca)
    publish(guard.store, guard.key, ca)
    with structlog.testing.capture_logs() as logs:
        guard.start()
        checks = guard.state.checks
        wait_for(lambda: guard.state.checks >= checks + 3, 120, what="three periodic checks", step=0.01)
        assert metrics.REGISTRY.get_sample_value("statesync_guard_trigger_ready") == 0
        (tmp_path / "restart-icinga").write_text("#!/bin/sh\nexit 0\n")
        os.chmod(tmp_path / "restart-icinga", 0o755)
        wait_for(lambda: guard.state.trigger_problem == "", 120, what="the trigger usable again", step=0.01)
    problems = [e for e in logs if e["event"].startswith("restart trigger not usable")]
    assert len(problems) == 1 and problems[0]["log_level"] == "error" and problems[0]["source"] == "start"
    assert "not found" in problems[0]["error"]
    assert any(e["event"] == "restart trigger usable again" for e in logs)
    assert metrics.REGISTRY.get_sample_value("statesync_guard_trigger_ready") == 1


# --- a trigger that fails after the quarantine --------------------------------------------------

@pytest.mark.consul
def test_a_trigger_that_fails_after_the_quarantine_gets_the_certificates_moved_back_and_a_later_check_purges(
        satellite, tmp_path):
    guard = satellite()
    files = _changed_ca(guard)
    with structlog.testing.capture_logs() as logs:
        assert guard.check("test").verdict is Verdict.MISMATCH
    assert guard.state.trigger_errors == 1 and fired(tmp_path / "fired") == 0
    _certs_intact(guard, files)
    assert quarantines(guard.root) == []
    assert sorted(os.listdir(guard.root / "certs")) == sorted(CERT_FILES)
    failed = [e for e in logs if e["event"].startswith("restart trigger failed")]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and "engine says no" in failed[0]["error"]
    # The purge window (600 s) was not consumed: once the trigger works, the next check purges.
    (tmp_path / "ok").write_text("")
    assert guard.check("test").verdict is Verdict.MISMATCH
    assert fired(tmp_path / "fired") == 1
    [qdir] = quarantines(guard.root)
    for name, data in files.items():
        assert (qdir / name).read_bytes() == data and not (guard.root / "certs" / name).exists()


# --- the state directory below the root ---------------------------------------------------------

@pytest.mark.consul
def test_a_guard_reads_and_quarantines_the_certificates_of_the_state_directory(satellite, tmp_path):
    (tmp_path / "ok").write_text("")
    guard = satellite(roots="state=var/lib/icinga2,config=etc/icinga2")
    state = tmp_path / "root/var/lib/icinga2"
    assert guard.root == state
    files = enrol(state, make_ca())
    publish(guard.store, guard.key, make_ca())
    assert guard.check("test").verdict is Verdict.MISMATCH
    [qdir] = quarantines(state)
    assert all((qdir / name).read_bytes() == data for name, data in files.items())
    assert not (tmp_path / "root/certs").exists()


@pytest.mark.consul
def test_check_ca_and_accept_ca_read_the_ca_of_the_state_directory(make_cfg, tmp_path):
    cfg = make_cfg(role="satellite", node="sat1", roots="state=var/lib/icinga2")
    ca = make_ca()
    enrol(cfg.state_dir, ca)
    store = Store(cfg.consul)
    publish(store, cfg.layout.ca, ca)
    out = io.StringIO()
    assert check_ca(cfg, out) == 0
    assert str(cfg.state_dir / "certs/ca.crt") in out.getvalue()
    (cfg.state_dir / "ca").mkdir()
    (cfg.state_dir / "ca/ca.crt").write_bytes(ca.pem)
    assert not accept_ca.propose(cfg, store).needed


# --- the defect as found: a sidecar as another user than the Docker socket's group -------------------

@pytest.mark.consul
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to uid 65534")
def test_a_satellite_sidecar_without_the_docker_sockets_group_says_so_and_keeps_its_certificates(
        consul, prefix, engine):
    path, handler = engine
    os.chown(path, 0, 4242)
    os.chmod(path, 0o660)
    base = Path(tempfile.mkdtemp(prefix="statesync-nobody-"))
    try:
        root = base / "root"
        old = make_ca()
        files = enrol(root, old)
        for p in [base, *root.rglob("*"), root]:
            os.chown(p, NOBODY, NOBODY)
        env = clean_env()
        env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
                   STATESYNC_NODE="sat1", STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true",
                   STATESYNC_GUARD_TRIGGER="docker", STATESYNC_GUARD_DOCKER_SOCKET=path,
                   STATESYNC_GUARD_DOCKER_CONTAINER="icinga2-sat", STATESYNC_GUARD_CONFIRMATIONS="1",
                   STATESYNC_GUARD_CONFIRM_INTERVAL="0.1", STATESYNC_GUARD_CHECK_INTERVAL="0.5")
        log = base / "sidecar.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                     *statesync_cmd("run", "--role", "satellite")], env=env, cwd=REPO,
                                    stdout=fh, stderr=subprocess.STDOUT)
        try:
            def events():
                out = []
                for line in log.read_text().splitlines():
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
                return out
            wait_for(lambda: any(e.get("event") == "CA guard started" for e in events()), 30,
                     what="the guard started", details=lambda: log.read_text()[-2000:])
            store = _store_for(consul.addr)
            publish(store, f"{prefix}/ca", make_ca())
            wait_for(lambda: sum(e.get("event") == "restart trigger not usable; certificates kept, nothing quarantined"
                                 for e in events()) >= 2, 30, what="two held purges",
                     details=lambda: log.read_text()[-2000:])
        finally:
            stop_process(proc, 15)
        notes = [e for e in events() if e.get("event") == "restart trigger not usable; no certificates are "
                                                           "quarantined until it is"]
        assert len(notes) == 1 and notes[0]["level"] == "error" and notes[0]["source"] == "start"
        assert "gid 4242" in notes[0]["error"] and "group_add" in notes[0]["error"]
        assert quarantines(root) == []
        assert all((root / "certs" / name).read_bytes() == data for name, data in files.items())
        assert handler.seen == []  # not even the inspect got through the socket's permissions
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _store_for(addr: str) -> Store:
    from statesync import config
    return Store(config.load({"node": "x", "consul.addr": [addr]}, env={}).consul)
