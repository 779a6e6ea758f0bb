"""Restart triggers of the satellite CA guard: what makes Icinga 2 restart (and enrol
again) once the guard has moved its certificates into quarantine.

Each trigger has ``check()``, a preflight that returns "" when the trigger can fire or one
line saying why not (a guard that quarantines and then cannot restart leaves the node
without certificates, so it never quarantines while this fails); ``prepare()``, called
just before the quarantine move (the API trigger keeps a copy of its CA file then, which
may be one of the files moved); and ``fire()``, which returns a short description for the
log or raises TriggerError. No trigger ever logs or shows the API password.
"""
from __future__ import annotations

import errno
import http.client
import os
import shutil
import signal as signals
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import quote, urlsplit

from ..errors import IcingaTlsError, IcingaUnreachable, TriggerError
from ..icinga.api import IcingaClient
from ..jsonload import loads
from .settings import GuardSettings

RESTART_PATH = "/v1/actions/restart-process"


class Trigger(Protocol):
    name: str

    def check(self) -> str:
        """"" when ``fire`` can work; otherwise one line saying why not. Never raises."""

    def prepare(self) -> None:
        """Take what ``fire`` needs from files the quarantine is about to move."""

    def fire(self) -> str:
        """Ask for the restart; return a short description; raise TriggerError."""


class ApiTrigger:
    """``POST <api_url>/v1/actions/restart-process`` with basic auth, verified with ``cacert``."""

    name = "api"

    def __init__(self, url: str, user: str, password: str, cacert: str = "", timeout: float = 30.0):
        self.url = url.rstrip("/") + RESTART_PATH
        self.user = user
        self._password = password
        self.cacert = cacert
        self.timeout = timeout
        self._ca_copy: str | None = None

    def __repr__(self) -> str:
        return f"ApiTrigger(url={self.url!r}, user={self.user!r})"

    def check(self) -> str:
        # A TCP connect says the API listens; a request would send the password for nothing.
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname, port), timeout=min(self.timeout, 10.0)):
                pass
        except OSError as exc:
            return f"Icinga 2 API at {parts.hostname}:{port} unreachable: {exc.strerror or exc}"
        return ""

    def prepare(self) -> None:
        # Icinga 2's API still presents the certificate of the CA being quarantined, and
        # api_cacert is often certs/ca.crt itself: keep a private copy to verify with.
        self._drop_copy()
        if not self.cacert:
            return
        try:
            data = Path(self.cacert).read_bytes()
        except OSError:
            return
        fd, path = tempfile.mkstemp(prefix="statesync-api-ca-", suffix=".crt")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        self._ca_copy = path

    def fire(self) -> str:
        parts = urlsplit(self.url)
        # The client owns TLS: the same context as the enrolment's, so both accept Icinga's
        # certificates on every Python the project supports.
        try:
            client = IcingaClient(f"{parts.scheme}://{parts.netloc}", self.user, self._password,
                                  self._ca_copy or self.cacert, timeout=self.timeout, default_port=None,
                                  allow_http=True)
        except ValueError as exc:
            self._drop_copy()
            raise TriggerError(f"Icinga 2 API at {self.url}: {exc}") from None
        try:
            status, body = client.request("POST", parts.path or "/")
        except IcingaTlsError:
            raise TriggerError(f"Icinga 2 API at {self.url}: TLS verification failed") from None
        except IcingaUnreachable as exc:
            raise TriggerError(f"Icinga 2 API at {self.url} unreachable ({exc.cause})") from None
        finally:
            client.close()
            self._drop_copy()
        if status == 401:
            raise TriggerError(f"Icinga 2 API at {self.url} refused user {self.user!r} (401)")
        if status != 200:
            text = body.decode("utf-8", "replace")[:200]
            raise TriggerError(f"Icinga 2 API at {self.url} answered {status}: {text}")
        return f"POST {self.url} answered 200"

    def _drop_copy(self) -> None:
        if self._ca_copy:
            try:
                os.unlink(self._ca_copy)
            except FileNotFoundError:
                pass
            self._ca_copy = None


class SignalTrigger:
    """Send ``sig`` to the pid written in ``pidfile`` (compose can share the PID namespace)."""

    name = "signal"

    def __init__(self, pidfile: str, sig: str = "SIGTERM"):
        self.pidfile = pidfile
        self.signal = signals.Signals[sig]

    def check(self) -> str:
        try:
            pid = self._pid()
            os.kill(pid, 0)
        except TriggerError as exc:
            return str(exc)
        except ProcessLookupError:
            return f"no process {pid} (from {self.pidfile})"
        except PermissionError:
            return f"not allowed to signal process {pid} (from {self.pidfile}): run as its user or share its PID namespace"
        return ""

    def prepare(self) -> None:
        pass

    def _pid(self) -> int:
        try:
            text = Path(self.pidfile).read_text().strip()
        except OSError as exc:
            raise TriggerError(f"cannot read pidfile {self.pidfile}: {exc.strerror}") from None
        try:
            pid = int(text.split()[0])
        except (ValueError, IndexError):
            raise TriggerError(f"pidfile {self.pidfile} holds no pid") from None
        if pid <= 0 or pid == os.getpid():
            # kill(0) and kill(-1) would signal whole process groups, or everything.
            raise TriggerError(f"pidfile {self.pidfile} holds pid {pid}, which is not Icinga 2's")
        return pid

    def fire(self) -> str:
        pid = self._pid()
        try:
            os.kill(pid, self.signal)
        except ProcessLookupError:
            raise TriggerError(f"no process {pid} (from {self.pidfile})") from None
        except PermissionError:
            raise TriggerError(f"not allowed to signal process {pid} (from {self.pidfile})") from None
        return f"sent {self.signal.name} to pid {pid}"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerTrigger:
    """``POST /containers/<name>/restart`` on the Docker Engine API's unix socket."""

    name = "docker"

    def __init__(self, socket_path: str, container: str, timeout: float = 30.0):
        self.socket_path = socket_path
        self.container = container
        self.timeout = timeout

    def check(self) -> str:
        path = f"/containers/{quote(self.container, safe='')}/json"
        conn = _UnixHTTPConnection(self.socket_path, min(self.timeout, 10.0))
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read(1000)
        except PermissionError:
            return self._no_access()
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                return self._no_access()
            return f"Docker Engine at {self.socket_path} unreachable: {exc.strerror or exc}"
        except http.client.HTTPException as exc:
            return f"Docker Engine at {self.socket_path} answered nonsense ({type(exc).__name__})"
        finally:
            conn.close()
        if resp.status == 404:
            return f"Docker Engine knows no container {self.container!r}: {_docker_message(body)}"
        if resp.status != 200:
            return f"Docker Engine answered {resp.status} to inspecting {self.container!r}: {_docker_message(body)}"
        return ""

    def _no_access(self) -> str:
        try:
            gid = os.stat(self.socket_path).st_gid
        except OSError:
            gid = "?"
        return (f"permission denied on the Docker socket {self.socket_path}: the sidecar's user (uid {os.geteuid()}) "
                f"lacks the socket's group (gid {gid}); in compose add `group_add: [\"{gid}\"]` to the sidecar")

    def prepare(self) -> None:
        pass

    def fire(self) -> str:
        path = f"/containers/{quote(self.container, safe='')}/restart"
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request("POST", path, headers={"Content-Length": "0"})
            resp = conn.getresponse()
            body = resp.read(1000)
        except OSError as exc:
            raise TriggerError(f"Docker Engine at {self.socket_path} unreachable: {exc.strerror or exc}") from None
        except http.client.HTTPException as exc:
            raise TriggerError(f"Docker Engine at {self.socket_path} answered nonsense ({type(exc).__name__})") from None
        finally:
            conn.close()
        if resp.status != 204:
            raise TriggerError(f"Docker Engine answered {resp.status} to restarting {self.container!r}: "
                               f"{_docker_message(body)}")
        return f"Docker restarted container {self.container}"


def _docker_message(body: bytes) -> str:
    try:
        return str(loads(body).get("message", ""))[:200]
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:200]


class CommandTrigger:
    """Run ``argv`` (no shell); a non-zero exit or a timeout is a failure."""

    name = "command"

    def __init__(self, argv: tuple[str, ...], timeout: float = 30.0):
        self.argv = tuple(argv)
        self.timeout = timeout

    def check(self) -> str:
        program = self.argv[0] if self.argv else ""
        if not program:
            return "no command configured"
        if "/" in program:
            if not os.path.isfile(program):
                return f"command {program!r} not found"
            if not os.access(program, os.X_OK):
                return f"command {program!r} is not executable"
            return ""
        return "" if shutil.which(program) else f"command {program!r} not found on PATH"

    def prepare(self) -> None:
        pass

    def fire(self) -> str:
        try:
            done = subprocess.run(self.argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout)
        except FileNotFoundError:
            raise TriggerError(f"command {self.argv[0]!r} not found") from None
        except PermissionError:
            raise TriggerError(f"command {self.argv[0]!r} is not executable") from None
        except subprocess.TimeoutExpired:
            raise TriggerError(f"command {self.argv[0]!r} did not finish within {self.timeout:g}s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-200:]
            raise TriggerError(f"command {self.argv[0]!r} exited with {done.returncode}: {tail}")
        return f"command {self.argv[0]!r} succeeded"


class ExitTrigger:
    """Make the sidecar exit with EXIT_RESTART (3): ``stop`` ends the daemon, and the
    command layer returns that code once ``requested`` is set."""

    name = "exit"

    def __init__(self, stop: Callable[[], None] | None = None):
        self.stop = stop
        self.requested = threading.Event()

    def check(self) -> str:
        return ""

    def prepare(self) -> None:
        pass

    def fire(self) -> str:
        self.requested.set()
        if self.stop is not None:
            self.stop()
        return "the sidecar exits with code 3"


def preflight(trigger: Trigger | None) -> str:
    """``trigger.check()``, with a trigger lacking one taken as usable and a crash as a reason."""
    check = getattr(trigger, "check", None)
    if check is None:
        return ""
    try:
        return check()
    except Exception as exc:  # a check must never be why the guard stops checking
        return f"{getattr(trigger, 'name', 'trigger')} check failed: {type(exc).__name__}: {exc}"


def from_settings(g: GuardSettings, stop: Callable[[], None] | None = None) -> Trigger:
    """Build the trigger ``g.trigger`` names; ``stop`` ends the sidecar (for ``exit``)."""
    if g.trigger == "api":
        return ApiTrigger(g.api_url, g.api_user, g.api_password, g.api_cacert, g.trigger_timeout)
    if g.trigger == "signal":
        return SignalTrigger(g.pidfile, g.signal)
    if g.trigger == "docker":
        return DockerTrigger(g.docker_socket, g.docker_container, g.trigger_timeout)
    if g.trigger == "command":
        return CommandTrigger(g.command, g.trigger_timeout)
    return ExitTrigger(stop)


__all__ = ["ApiTrigger", "CommandTrigger", "DockerTrigger", "ExitTrigger", "SignalTrigger", "Trigger",
           "from_settings", "preflight", "RESTART_PATH"]
