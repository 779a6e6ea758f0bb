"""The restart triggers against real counterparts: an HTTPS server standing in for the Icinga 2
API on 127.0.0.1, a real child process for the signal, an HTTP server on a unix socket for the
Docker Engine (no engine runs here), and real commands."""
from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import signal
import socketserver
import ssl
import subprocess
import sys
import threading

import pytest

from statesync import config
from statesync.errors import TriggerError
from statesync.guard import triggers
from statesync.guard.triggers import ApiTrigger, CommandTrigger, DockerTrigger, ExitTrigger, SignalTrigger

from ..certs import make_ca, sign


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers like the Icinga 2 API's restart-process action when method, path and auth are right."""

    expected_auth = ""
    requests: list = []

    def do_POST(self):
        self.requests.append((self.command, self.path, self.headers.get("Authorization"),
                              self.headers.get("Accept")))
        if self.headers.get("Authorization") != self.expected_auth:
            return self._answer(401, {"error": 401, "status": "Unauthorized"})
        if self.path != "/v1/actions/restart-process":
            return self._answer(404, {"error": 404, "status": "no such action"})
        self._answer(200, {"results": [{"code": 200, "status": "Restarting Icinga 2."}]})

    def do_GET(self):
        self.requests.append((self.command, self.path, None, None))
        self._answer(405, {"error": 405})

    def _answer(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def icinga_api(tmp_path):
    """An HTTPS server on 127.0.0.1 whose certificate is signed by a test CA; yields (url, ca_path)."""
    ca = make_ca("Icinga CA")
    key, cert, _ = sign(ca, "127.0.0.1", ip="127.0.0.1")
    (tmp_path / "server.key").write_bytes(key)
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "api-ca.crt").write_bytes(ca.pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")

    class Handler(_Recorder):
        expected_auth = "Basic " + base64.b64encode(b"statesync:pa55:word").decode()
        requests = []

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", str(tmp_path / "api-ca.crt"), Handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_api_trigger_posts_restart_process_with_basic_auth_verified_by_the_api_ca(icinga_api):
    url, ca_path, seen = icinga_api
    result = ApiTrigger(url, "statesync", "pa55:word", ca_path, timeout=5).fire()
    assert "200" in result
    assert seen == [("POST", "/v1/actions/restart-process",
                     "Basic " + base64.b64encode(b"statesync:pa55:word").decode(), "application/json")]


def test_the_api_trigger_accepts_a_certificate_without_key_identifiers_under_python_3_13_defaults(
        icinga_api, monkeypatch):
    """Python 3.13's default context refuses such certificates (VERIFY_X509_STRICT), and Icinga 2
    issues no others; the test CA issues none either. 3.13's default is given to this Python."""
    original = ssl.create_default_context

    def strict(*args, **kwargs):
        ctx = original(*args, **kwargs)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    monkeypatch.setattr(ssl, "create_default_context", strict)
    url, ca_path, seen = icinga_api
    assert "200" in ApiTrigger(url, "statesync", "pa55:word", ca_path, timeout=5).fire()
    assert [s[:2] for s in seen] == [("POST", "/v1/actions/restart-process")]


def test_the_api_trigger_is_built_from_the_config_with_the_password_read_from_its_file(icinga_api, tmp_path):
    url, ca_path, seen = icinga_api
    (tmp_path / "pw").write_text("pa55:word\n")
    cfg = config.load({"node": "sat1", "guard.trigger": "api", "guard.api_url": url, "guard.api_user": "statesync",
                       "guard.api_password_file": str(tmp_path / "pw"), "guard.api_cacert": ca_path}, env={})
    trigger = triggers.from_settings(cfg.guard)
    assert "pa55" not in repr(trigger)
    trigger.fire()
    assert [s[:2] for s in seen] == [("POST", "/v1/actions/restart-process")]


def test_the_api_trigger_still_verifies_the_api_after_its_ca_file_was_quarantined(icinga_api, tmp_path):
    url, ca_path, seen = icinga_api
    certs = tmp_path / "root" / "certs"
    certs.mkdir(parents=True)
    shutil.copy(ca_path, certs / "ca.crt")
    trigger = ApiTrigger(url, "statesync", "pa55:word", str(certs / "ca.crt"), timeout=5)
    trigger.prepare()
    os.rename(certs / "ca.crt", tmp_path / "quarantined-ca.crt")  # what the purge does
    trigger.fire()
    assert len(seen) == 1


def test_the_api_trigger_reports_a_refused_password_without_showing_it(icinga_api):
    url, ca_path, _ = icinga_api
    with pytest.raises(TriggerError, match="401") as info:
        ApiTrigger(url, "statesync", "wrong-password", ca_path, timeout=5).fire()
    assert "wrong-password" not in str(info.value)


def test_the_api_trigger_refuses_an_api_whose_certificate_another_ca_signed(icinga_api, tmp_path):
    url, _, seen = icinga_api
    (tmp_path / "other-ca.crt").write_bytes(make_ca().pem)
    with pytest.raises(TriggerError, match="TLS verification failed"):
        ApiTrigger(url, "statesync", "pa55:word", str(tmp_path / "other-ca.crt"), timeout=5).fire()
    assert seen == []


def test_the_api_trigger_reports_an_unreachable_api():
    from ..support import free_ports
    with pytest.raises(TriggerError, match="unreachable"):
        ApiTrigger(f"https://127.0.0.1:{free_ports(1)[0]}", "u", "p", timeout=2).fire()


# --- signal -----------------------------------------------------------------------------

_CHILD = """
import signal, sys, time
def on_signal(num, frame):
    open(sys.argv[1], "w").write(signal.Signals(num).name)
    sys.exit(0)
signal.signal(signal.SIGHUP, on_signal)
print("ready", flush=True)
time.sleep(30)
"""


def _child(tmp_path, handler: bool):
    code = _CHILD if handler else "import time; print('ready', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "got")], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"  # bounded: the child prints at once or dies
    (tmp_path / "icinga2.pid").write_text(f"{proc.pid}\n")
    return proc


def test_the_signal_trigger_sends_the_configured_signal_to_the_pid_in_the_pidfile(tmp_path):
    proc = _child(tmp_path, handler=True)
    try:
        assert "SIGHUP" in SignalTrigger(str(tmp_path / "icinga2.pid"), "SIGHUP").fire()
        assert proc.wait(10) == 0
        assert (tmp_path / "got").read_text() == "SIGHUP"
    finally:
        proc.kill()
        proc.wait(5)


def test_the_signal_trigger_sends_sigterm_by_default(tmp_path):
    proc = _child(tmp_path, handler=False)
    try:
        cfg = config.load({"node": "sat1", "guard.trigger": "signal", "guard.pidfile": str(tmp_path / "icinga2.pid")},
                          env={})
        triggers.from_settings(cfg.guard).fire()
        assert proc.wait(10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(5)


def test_the_signal_trigger_reports_a_missing_pidfile_a_junk_pidfile_and_a_dead_process(tmp_path):
    with pytest.raises(TriggerError, match="cannot read pidfile"):
        SignalTrigger(str(tmp_path / "none.pid")).fire()
    (tmp_path / "junk.pid").write_text("not a pid")
    with pytest.raises(TriggerError, match="holds no pid"):
        SignalTrigger(str(tmp_path / "junk.pid")).fire()
    (tmp_path / "zero.pid").write_text("0")
    with pytest.raises(TriggerError, match="not Icinga 2's"):
        SignalTrigger(str(tmp_path / "zero.pid")).fire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    (tmp_path / "dead.pid").write_text(str(dead.pid))
    with pytest.raises(TriggerError, match="no process"):
        SignalTrigger(str(tmp_path / "dead.pid")).fire()


# --- docker -----------------------------------------------------------------------------

class _DockerHandler(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        self.seen.append((self.command, self.path))
        if self.path == "/containers/icinga2-sat/restart":
            self.send_response(204)
            self.end_headers()
            return
        body = json.dumps({"message": f"No such container: {self.path.split('/')[2]}"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):  # a unix socket peer has no address
        return "unix"

    def log_message(self, *args):
        pass


@pytest.fixture
def docker_socket(tmp_path):
    """A stand-in for the Docker Engine API on a unix socket (the only stand-in these tests use)."""
    path = str(tmp_path / "docker.sock")

    class Handler(_DockerHandler):
        seen = []

    server = socketserver.ThreadingUnixStreamServer(path, Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield path, Handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_docker_trigger_restarts_the_named_container_over_the_unix_socket(docker_socket):
    path, seen = docker_socket
    cfg = config.load({"node": "sat1", "guard.trigger": "docker", "guard.docker_socket": path,
                       "guard.docker_container": "icinga2-sat"}, env={})
    assert "icinga2-sat" in triggers.from_settings(cfg.guard).fire()
    assert seen == [("POST", "/containers/icinga2-sat/restart")]


def test_the_docker_trigger_reports_an_unknown_container_and_a_missing_engine(docker_socket, tmp_path):
    path, _ = docker_socket
    with pytest.raises(TriggerError, match="404.*No such container: nope"):
        DockerTrigger(path, "nope", timeout=5).fire()
    with pytest.raises(TriggerError, match="unreachable"):
        DockerTrigger(str(tmp_path / "no.sock"), "icinga2-sat", timeout=5).fire()


# --- command and exit ---------------------------------------------------------------------

def test_the_command_trigger_runs_its_argv_without_a_shell(tmp_path):
    out = tmp_path / "out"
    argv = (sys.executable, "-c", "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(out), "$(id); `x` > y")
    CommandTrigger(argv, timeout=10).fire()
    assert out.read_text() == "$(id); `x` > y"
    assert not (tmp_path / "y").exists()


def test_the_command_trigger_reports_failure_absence_and_timeout(tmp_path):
    with pytest.raises(TriggerError, match="exited with 3: boom"):
        CommandTrigger((sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"), 10).fire()
    with pytest.raises(TriggerError, match="not found"):
        CommandTrigger((str(tmp_path / "missing"),), 10).fire()
    # A command that would never end on its own: the trigger returning at all shows its timeout
    # ended it, and the pid it wrote shows the process is gone, not left behind.
    pid_file = tmp_path / "pid"
    forever = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(3600)"
    with pytest.raises(TriggerError, match="did not finish within 1s"):
        CommandTrigger((sys.executable, "-c", forever), 1).fire()
    if pid_file.exists() and pid_file.read_text():  # a loaded machine may not have started it within 1 s
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)


def test_the_exit_trigger_stops_the_daemon_and_asks_for_exit_code_3():
    stopped = []
    trigger = ExitTrigger(lambda: stopped.append(True))
    assert "code 3" in trigger.fire()
    assert stopped == [True] and trigger.requested.is_set()
    from statesync.errors import EXIT_RESTART
    assert EXIT_RESTART == 3


def test_the_api_trigger_reports_an_api_url_it_cannot_use_in_one_line():
    with pytest.raises(TriggerError, match="https://HOST") as info:
        ApiTrigger("ftp://127.0.0.1:5665", "u", "secret-pw", timeout=2).fire()
    assert "\n" not in str(info.value) and "secret-pw" not in str(info.value)
