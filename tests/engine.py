"""Test-side helpers for the real container engine (dockerd + docker-compose 1.29).

No registry is reachable from the test machine: scripts/images.sh builds stand-ins for
every public image the compose files use (tests/images/README.md). Tests that need the
engine fail, never skip, when it cannot be brought up.

Everything a test starts is removed by ID or by its compose project label, never by a
broad name, so tests running beside other users of the same daemon stay out of their way.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

DOCKER = "/usr/bin/docker"
COMPOSE = "/usr/bin/docker-compose"
ROOT = Path(__file__).resolve().parent.parent

IMAGES = {
    "debian:bookworm-slim": "statesync-standin/debian:bookworm",
    "python:3.11-slim": "statesync-standin/python:3.11-slim",
    "hashicorp/consul:1.8.7": "statesync-standin/consul:1.8.7",
    "icinga/icinga2:2.14": "statesync-standin/icinga2:2.14",
    "debian:sid-slim": "statesync-standin/debian:sid",
    "icinga/icinga2:2.16": "statesync-standin/icinga2:2.16",
}
DEBIAN, PYTHON, CONSUL, ICINGA2, DEBIAN_SID, ICINGA2_16 = IMAGES.values()


@dataclass(frozen=True)
class IcingaImage:
    """One layout of the official icinga/icinga2 image, as the tests tell them apart."""

    version: str
    tag: str
    node_setup_log: str  # the entrypoint's line when it runs node setup
    data_init: bool  # up to 2.15: /data-init copied into /data by the entrypoint; then VOLUME /data


ICINGA_IMAGES = {
    "2.14": IcingaImage("2.14", ICINGA2, "Running 'node setup'", True),
    "2.16": IcingaImage("2.16", ICINGA2_16, "Running Icinga 2 node setup command", False),
}

_counter = itertools.count()
_lock = threading.Lock()
_ready: bool = False


class EngineError(RuntimeError):
    pass


def _run(args, *, timeout: float = 120, check: bool = True, env=None, input=None,
         cwd=None) -> subprocess.CompletedProcess:
    # Hidden from tracebacks: its locals hold the whole environment, tokens included.
    __tracebackhide__ = True
    if env is not None:
        env = {**os.environ, **env}
    try:
        proc = subprocess.run(list(map(str, args)), capture_output=True, text=True,
                              timeout=timeout, env=env, input=input, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"timed out after {timeout} s: {' '.join(map(str, args))}") from exc
    if check and proc.returncode != 0:
        raise EngineError(f"exit {proc.returncode}: {' '.join(map(str, args))}\n"
                          f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    return proc


def docker(*args, timeout: float = 120, check: bool = True, input=None) -> subprocess.CompletedProcess:
    return _run([DOCKER, *args], timeout=timeout, check=check, input=input)


def ensure_engine() -> None:
    """Install and start the engine and build the stand-in images, once per session."""
    global _ready
    with _lock:
        if _ready:
            return
        # Cold: apt installs plus six image builds; cached, about a second.
        for script, timeout in (("scripts/engine.sh", 600), ("scripts/images.sh", 1800)):
            try:
                proc = subprocess.run(["bash", str(ROOT / script)], capture_output=True,
                                      text=True, timeout=timeout, cwd=ROOT)
            except subprocess.TimeoutExpired as exc:
                raise EngineError(f"{script} did not finish within {timeout} s") from exc
            if proc.returncode != 0:
                raise EngineError(f"{script} failed (exit {proc.returncode}):\n"
                                  f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
        _ready = True


def build_statesync_image(tag: str = "statesync:test", timeout: float = 900) -> str:
    """Build the project's Dockerfile on the python stand-in; returns the image ID.

    Docker's layer cache makes a rebuild without changes take seconds.
    """
    docker("build", "--force-rm", "--network", "host", "--build-arg", f"PYTHON_IMAGE={PYTHON}",
           "-t", tag, str(ROOT), timeout=timeout)
    return image_id(tag)


def image_id(ref: str) -> str:
    return docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


def inspect(ref: str, kind: str = "container") -> dict:
    return json.loads(docker(kind, "inspect", ref).stdout)[0]


def container_state(container_id: str) -> dict:
    return inspect(container_id)["State"]


def container_exit_code(container_id: str, timeout: float = 60) -> int:
    """Wait (bounded) for the container to stop; its exit code."""
    deadline = time.monotonic() + timeout
    while True:
        state = container_state(container_id)
        if state["Status"] in ("exited", "dead"):
            return int(state["ExitCode"])
        if time.monotonic() > deadline:
            raise EngineError(f"container {container_id[:12]} still {state['Status']} "
                              f"after {timeout} s")
        time.sleep(0.5)


def container_logs(container_id: str) -> str:
    proc = docker("logs", container_id, check=False)
    return proc.stdout + proc.stderr


def wait_healthy(container_id: str, timeout: float = 120) -> None:
    """Wait until the container's health check passes (or, without one, it runs)."""
    deadline = time.monotonic() + timeout
    while True:
        state = container_state(container_id)
        health = (state.get("Health") or {}).get("Status")
        if health == "healthy" or (health is None and state["Status"] == "running"):
            return
        if state["Status"] in ("exited", "dead") or health == "unhealthy":
            raise EngineError(f"container {container_id[:12]} is {health or state['Status']}:\n"
                              f"{container_logs(container_id)[-4000:]}")
        if time.monotonic() > deadline:
            raise EngineError(f"container {container_id[:12]} not healthy after {timeout} s "
                              f"({health or state['Status']}):\n"
                              f"{container_logs(container_id)[-4000:]}")
        time.sleep(0.5)


def volume_rm(name: str) -> None:
    docker("volume", "rm", "-f", name, check=False)


def image_rm(ref: str) -> None:
    docker("image", "rm", "-f", ref, check=False)


def unique_name(prefix: str = "ss") -> str:
    # Compose 1.29 lowercases and strips project names to [a-z0-9]; keep them plain.
    return f"{prefix}{os.getpid()}{next(_counter)}"


class Compose:
    """One docker-compose 1.29 project, unique to the test that creates it.

    Use as a context manager (or call cleanup() in a finally): it removes the project's
    containers, networks and volumes by the IDs its labels select.
    """

    def __init__(self, *files, env: dict | None = None, project: str | None = None,
                 cwd=None):
        if not files:
            raise ValueError("at least one compose file")
        self.files = [str(f) for f in files]
        self.project = project or unique_name()
        self.cwd = str(cwd or Path(self.files[0]).parent)
        self.env = dict(env or {})

    def __enter__(self) -> "Compose":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def compose(self, *args, timeout: float = 300, check: bool = True,
                input=None) -> subprocess.CompletedProcess:
        __tracebackhide__ = True
        cmd = [COMPOSE, "--ansi", "never", "-p", self.project]
        for f in self.files:
            cmd += ["-f", f]
        return _run([*cmd, *args], timeout=timeout, check=check, env=self.env,
                    input=input, cwd=self.cwd)

    def up(self, *services, detach: bool = True, wait: float | None = 120,
           build: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
        """Start services; with wait, until each is healthy (or running without a check)."""
        args = ["up", "--no-color"]
        if detach:
            args.append("-d")
        if build:
            args.append("--build")
        proc = self.compose(*args, *services, timeout=timeout)
        if detach and wait:
            deadline = time.monotonic() + wait
            for service in services or self.services():
                for cid in self.container_ids(service):
                    wait_healthy(cid, max(1.0, deadline - time.monotonic()))
        return proc

    def down(self, volumes: bool = True, timeout: float = 120) -> None:
        args = ["down", "--remove-orphans", "-t", "5"]
        if volumes:
            args.append("-v")
        self.compose(*args, timeout=timeout)

    def services(self) -> list[str]:
        return self.compose("config", "--services").stdout.split()

    def ps(self, all: bool = True) -> list[dict]:
        """The project's containers as docker reports them (one-off run containers too)."""
        args = ["ps", "--no-trunc", "--format", "{{json .}}",
                "--filter", f"label=com.docker.compose.project={self.project}"]
        if all:
            args.insert(1, "-a")
        return [json.loads(line) for line in docker(*args).stdout.splitlines() if line]

    def container_ids(self, service: str) -> list[str]:
        return docker("ps", "-aq", "--no-trunc",
                      "--filter", f"label=com.docker.compose.project={self.project}",
                      "--filter", f"label=com.docker.compose.service={service}",
                      "--filter", "label=com.docker.compose.oneoff=False").stdout.split()

    def container_id(self, service: str) -> str:
        ids = self.container_ids(service)
        if len(ids) != 1:
            raise EngineError(f"{self.project}: {len(ids)} containers for service {service}")
        return ids[0]

    def logs(self, *services) -> str:
        proc = self.compose("logs", "--no-color", *services, check=False)
        return proc.stdout + proc.stderr

    def exec(self, service: str, *cmd, user: str | None = None, check: bool = True,
             timeout: float = 120, input=None) -> subprocess.CompletedProcess:
        args = ["exec", "-T"]
        if user:
            args += ["-u", user]
        return self.compose(*args, service, *cmd, check=check, timeout=timeout, input=input)

    def run(self, service: str, *cmd, env: dict | None = None, entrypoint: str | None = None,
            check: bool = True, deps: bool = False,
            timeout: float = 180) -> subprocess.CompletedProcess:
        """A one-off container (removed afterwards); exit code in the result."""
        args = ["run", "--rm", "-T"]
        if not deps:
            args.append("--no-deps")
        if entrypoint is not None:
            args += ["--entrypoint", entrypoint]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        return self.compose(*args, service, *cmd, check=check, timeout=timeout)

    def cleanup(self) -> None:
        """Remove everything of this project by ID; safe to call more than once."""
        label = f"label=com.docker.compose.project={self.project}"
        ids = docker("ps", "-aq", "--no-trunc", "--filter", label, check=False).stdout.split()
        if ids:
            docker("rm", "-f", "-v", *ids, check=False, timeout=120)
        nets = docker("network", "ls", "-q", "--no-trunc", "--filter", label,
                      check=False).stdout.split()
        if nets:
            docker("network", "rm", *nets, check=False)
        vols = docker("volume", "ls", "-q", "--filter", label, check=False).stdout.split()
        if vols:
            docker("volume", "rm", "-f", *vols, check=False)


class Engine:
    """What the session fixture hands to tests."""

    docker = staticmethod(docker)
    images = IMAGES
    build_statesync_image = staticmethod(build_statesync_image)

    def compose(self, *files, **kwargs) -> Compose:
        return Compose(*files, **kwargs)
