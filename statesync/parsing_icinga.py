"""The parsers of the settings that name Icinga 2 things (``guard.*``, ``enrol.*``): pure.

Each raises ValueError saying what is wrong with the value; ``config`` names the setting in
front of the message. They sit below ``config`` and the packages alike, so that ``config``
never imports the guard or enrol packages, which import it.
"""
from __future__ import annotations

import re
import shlex
import signal
from typing import Any
from urllib.parse import urlsplit

from .jsonload import loads

_CONTAINER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_CERT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
# The same rule as registration.valid_name: names end up inside double quotes in Icinga config.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


def parse_http_url(v: Any) -> str:
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
                v = loads(text)
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


def parse_matching(v: Any, pattern: re.Pattern, what: str) -> str:
    """A stripped string ("" for unset) that must match ``pattern``; ValueError naming ``what``."""
    if not isinstance(v, str):
        raise ValueError(f"expected {what.split(' (')[0]}, got {type(v).__name__}")
    v = v.strip()
    if v and not pattern.match(v):
        raise ValueError(f"{v!r} is not {what}")
    return v


def parse_name(v: Any) -> str:
    """A zone or endpoint name ("" for unset): letters, digits, '.', '_', '-'."""
    return parse_matching(v, _NAME_RE, "an Icinga object name (letters, digits, '.', '_', '-')")


def parse_names(v: Any) -> tuple[str, ...]:
    """A list of names: a TOML list, or one comma-separated string."""
    items = [p.strip() for p in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ValueError("expected a list of names")
    return tuple(parse_name(p) for p in items if p.strip())


def parse_globs(v: Any) -> tuple[str, ...]:
    """CN globs (fnmatch: '*', '?', '[...]'), a TOML list or one comma-separated string."""
    items = [p.strip() for p in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ValueError("expected a list of glob patterns")
    out = tuple(p.strip() for p in items if p.strip())
    for p in out:
        if not re.match(r"^[A-Za-z0-9._*?\[\]!-]+$", p):
            raise ValueError(f"{p!r} is not a CN glob (letters, digits, '.', '_', '-', '*', '?', '[...]')")
    return out


def parse_zone_map(v: Any) -> tuple[tuple[str, str], ...]:
    """``"GLOB=ZONE"`` items (a TOML list, or one comma-separated string): the CNs matching GLOB may
    register ZONE. A TOML table cannot hold them: its keys would be read as settings."""
    items = [p.strip() for p in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ValueError('expected a list of "CN-GLOB=ZONE" items, such as ["sat-a*=zone-a"]')
    out = []
    for item in (p.strip() for p in items if p.strip()):
        glob, eq, zone = (x.strip() for x in item.partition("="))
        if not eq or not glob or not zone:
            raise ValueError(f"{item!r} is not CN-GLOB=ZONE")
        (glob,) = parse_globs([glob])
        out.append((glob, parse_name(zone)))
    return tuple(dict.fromkeys(out))


def parse_host(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a host name or address, got {type(v).__name__}")
    v = v.strip()
    if v and not re.match(r"^[A-Za-z0-9.:-]{1,253}$", v):
        raise ValueError(f"{v!r} is not a host name or IP address")
    return v


def parse_package(v: Any) -> str:
    if not isinstance(v, str) or not _PACKAGE_RE.match(v.strip()):
        raise ValueError(f"{v!r} is not a config package name (letters, digits, '_', '-')")
    return v.strip()


def parse_https_url(v: Any) -> str:
    """An https:// base URL of Icinga 2's API."""
    if not isinstance(v, str):
        raise ValueError(f"expected a URL, got {type(v).__name__}")
    v = v.strip().rstrip("/")
    parts = urlsplit(v)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"{v!r} is not an https:// URL (Icinga 2's API speaks TLS only)")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the URL; use enrol.api_user and enrol.api_password_file")
    if parts.path not in ("", "/"):
        raise ValueError(f"{v!r}: give the base URL, without a path")
    return v
