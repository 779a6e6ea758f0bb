"""The CA guard's settings (``guard.*``): value parsers, cross-checks and the frozen result.

The settings themselves are declared in ``config.SCHEMA`` like every other; this
module holds what is specific to the guard so that ``config`` stays short. Parsers
raise ValueError (``config`` turns it into an error naming the setting); ``build``
raises ConfigError naming the setting.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError

TRIGGERS = ("api", "signal", "docker", "command", "exit")
_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_CERT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")

# What each trigger cannot work without.
_REQUIRED = {
    "api": ("guard.api_url", "guard.api_user", "guard.api_password_file"),
    "signal": ("guard.pidfile",),
    "docker": ("guard.docker_socket", "guard.docker_container"),
    "command": ("guard.command",),
    "exit": (),
}


@dataclass(frozen=True)
class GuardSettings:
    """How the satellite CA guard checks and what it fires. ``api_password`` is never shown."""

    trigger: str = "exit"
    confirmations: int = 2
    confirm_interval: float = 2.0
    check_interval: float = 60.0
    purge_window: float = 600.0
    clock_skew: float = 300.0
    cert_name: str = ""
    api_url: str = ""
    api_user: str = ""
    api_password_file: str = ""
    api_password: str = field(default="", repr=False)
    api_cacert: str = ""
    pidfile: str = ""
    signal: str = "SIGTERM"
    docker_socket: str = "/var/run/docker.sock"
    docker_container: str = ""
    command: tuple[str, ...] = ()
    trigger_timeout: float = 30.0
    # The parent endpoint whose TLS certificate the guard fetches, checks against the published
    # CA and writes to trusted_parent_file, for the next enrolment to pin (host:port).
    parent_host: str = ""
    trusted_parent_file: str = ""


DEFAULTS = GuardSettings()


def parse_parent_host(v: Any) -> str:
    """``host[:port]`` of the parent endpoint (port 5665 when left out); "" for none."""
    if not isinstance(v, str):
        raise ValueError(f"expected host[:port], got {type(v).__name__}")
    v = v.strip()
    if not v:
        return ""
    host, _, port = v.rpartition(":") if v.count(":") == 1 or v.startswith("[") else (v, "", "")
    host = host.strip("[]")
    if not host or not re.match(r"^[A-Za-z0-9._:-]+$", host):
        raise ValueError(f"{v!r} is not host[:port]")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{v!r}: port {port!r} is not 1-65535")
    return f"{host}:{port or 5665}" if ":" not in host else f"[{host}]:{port or 5665}"


def parse_signal(v: Any) -> str:
    """``TERM``, ``SIGTERM``, ``hup`` or a number -> the canonical name (``SIGTERM``)."""
    if isinstance(v, bool):
        raise ValueError(f"expected a signal name such as TERM or HUP, got {v!r}")
    if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
        try:
            return signal.Signals(int(v)).name
        except ValueError:
            raise ValueError(f"{v!r} is not a signal number") from None
    if not isinstance(v, str):
        raise ValueError(f"expected a signal name such as TERM or HUP, got {type(v).__name__}")
    name = v.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signal.Signals.__members__:
        raise ValueError(f"{v!r} is not a signal name (TERM, HUP, INT, USR1, ...)")
    return name


def parse_url(v: Any) -> str:
    """An http(s) base URL such as ``https://icinga2:5665``; empty means unset."""
    if not isinstance(v, str):
        raise ValueError(f"expected a URL, got {type(v).__name__}")
    v = v.strip().rstrip("/")
    if not v:
        return ""
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{v!r} is not an http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the URL; use guard.api_user and guard.api_password_file")
    return v


def parse_container(v: Any) -> str:
    """A Docker container name or id; empty means unset."""
    return parse_matching(v, _CONTAINER_RE, "a container name (letters, digits, '_', '.', '-')")


def parse_cert_name(v: Any) -> str:
    """Icinga 2's node name as used in certs/<name>.crt; empty means detect it."""
    return parse_matching(v, _CERT_NAME_RE, "a certificate file name (letters, digits, '.', '_', '-')")


def parse_argv(v: Any) -> tuple[str, ...]:
    """A command as an argument list. In TOML a list of strings; in the environment a
    JSON array (``["/bin/restart", "icinga2"]``) or words split as a shell would
    split them, without any shell ever running."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            try:
                v = json.loads(text)
            except ValueError:
                raise ValueError("not a valid JSON array of strings") from None
        else:
            try:
                v = shlex.split(text)
            except ValueError as exc:
                raise ValueError(f"cannot split into words: {exc}") from None
    if not isinstance(v, (list, tuple)) or not all(isinstance(a, str) for a in v):
        raise ValueError("expected a list of strings (program first, then its arguments)")
    if v and not v[0]:
        raise ValueError("the program (first element) must not be empty")
    return tuple(v)


def read_password(path: str, setting: str = "guard.api_password_file") -> str:
    """The password in the file ``path`` (stripped); ConfigError naming ``setting`` when it is
    unreadable, not UTF-8 or empty. The password itself is never part of a message."""
    try:
        with open(path, encoding="utf-8") as fh:
            password = fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{setting}: {path} is not UTF-8 text (byte {exc.start})") from None
    if not password:
        raise ConfigError(f"{setting}: {path} is empty")
    return password


def parse_matching(v: Any, pattern: re.Pattern, what: str) -> str:
    """A stripped string ("" for unset) that must match ``pattern``; ValueError naming ``what``."""
    if not isinstance(v, str):
        raise ValueError(f"expected {what.split(' (')[0]}, got {type(v).__name__}")
    v = v.strip()
    if v and not pattern.match(v):
        raise ValueError(f"{v!r} is not {what}")
    return v


def build(v: Mapping[str, Any]) -> GuardSettings:
    """Build GuardSettings from parsed ``guard.*`` values; raise ConfigError naming the setting.

    Checks that the chosen trigger has what it needs, reads the API password from
    its file, and checks that a given API CA file exists.
    """
    trigger = v["guard.trigger"]
    for name in _REQUIRED[trigger]:
        if not v[name]:
            raise ConfigError(f"{name}: required when guard.trigger is {trigger}")
    password = read_password(v["guard.api_password_file"]) if v["guard.api_password_file"] else ""
    if v["guard.api_cacert"] and not os.path.isfile(v["guard.api_cacert"]):
        raise ConfigError(f"guard.api_cacert: file {v['guard.api_cacert']} does not exist")
    if v["guard.api_url"].startswith("http://") and trigger == "api" and password:
        # Plain HTTP would send the password in the clear; allowed only on loopback.
        host = urlsplit(v["guard.api_url"]).hostname or ""
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError("guard.api_url: use https:// (plain http:// is accepted on loopback only)")
    return GuardSettings(
        trigger=trigger, confirmations=v["guard.confirmations"], confirm_interval=v["guard.confirm_interval"],
        check_interval=v["guard.check_interval"], purge_window=v["guard.purge_window"],
        clock_skew=v["guard.clock_skew"],
        cert_name=v["guard.cert_name"], api_url=v["guard.api_url"], api_user=v["guard.api_user"],
        api_password_file=v["guard.api_password_file"], api_password=password, api_cacert=v["guard.api_cacert"],
        pidfile=v["guard.pidfile"], signal=v["guard.signal"], docker_socket=v["guard.docker_socket"],
        docker_container=v["guard.docker_container"], command=v["guard.command"],
        trigger_timeout=v["guard.trigger_timeout"], parent_host=v["guard.parent_host"],
        trusted_parent_file=v["guard.trusted_parent_file"])

