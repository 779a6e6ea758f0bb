"""The enrolment settings (``enrol.*``): parsers, cross-checks and the frozen result.

Declared in ``config.SCHEMA`` like every other setting; parsers raise ValueError (``config``
names the setting in front of the message), ``build`` raises ConfigError naming the setting.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..guard.settings import parse_matching, read_password

# The same rule as registration.valid_name: names end up inside double quotes in Icinga config.
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class EnrolSettings:
    """How a satellite registers and how the master accepts. ``api_password`` is never shown."""

    enabled: bool = False
    # satellite side: what the registration asks for
    zone: str = ""  # "" = the certificate name
    parent_zone: str = "master"
    host: str = ""
    port: int = 0
    # master side: Icinga 2's API, and what may be accepted
    api_url: str = "https://127.0.0.1:5665"
    api_user: str = "statesync"
    api_password_file: str = ""
    api_password: str = field(default="", repr=False)
    api_cacert: str = ""  # "" = the master's own ca/ca.crt
    api_server_name: str = ""  # "" = the host of api_url
    package: str = "statesync-satellites"
    allow: tuple[str, ...] = ("*",)
    parent_zones: tuple[str, ...] = ("master",)
    global_zones: tuple[str, ...] = ("global-templates", "director-global")
    reserved: tuple[str, ...] = ()
    # (CN glob, zone) pairs that authorise a zone other than the CN's own (docs/ENROL.md)
    zones: tuple[tuple[str, str], ...] = ()
    interval: float = 30.0
    stage_timeout: float = 60.0


DEFAULTS = EnrolSettings()


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


def parse_url(v: Any) -> str:
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


def build(v: Mapping[str, Any], role: str | None) -> EnrolSettings:
    """EnrolSettings from parsed ``enrol.*`` values; a master that enrols needs the API password."""
    if v["enrol.enabled"] and role == "master" and not v["enrol.api_password_file"]:
        raise ConfigError("enrol.api_password_file: required when enrol.enabled is on for a master "
                          "(the Icinga 2 API user that stages the satellites' zones)")
    if v["enrol.api_cacert"] and not os.path.isfile(v["enrol.api_cacert"]):
        raise ConfigError(f"enrol.api_cacert: file {v['enrol.api_cacert']} does not exist")
    if v["enrol.parent_zone"] == "":
        raise ConfigError("enrol.parent_zone: must not be empty")
    if not v["enrol.parent_zones"]:
        raise ConfigError("enrol.parent_zones: name at least one zone satellites may be children of")
    password = read_password(v["enrol.api_password_file"], "enrol.api_password_file") if v["enrol.api_password_file"] else ""
    return EnrolSettings(
        enabled=v["enrol.enabled"], zone=v["enrol.zone"], parent_zone=v["enrol.parent_zone"],
        host=v["enrol.host"], port=v["enrol.port"], api_url=v["enrol.api_url"], api_user=v["enrol.api_user"],
        api_password_file=v["enrol.api_password_file"], api_password=password, api_cacert=v["enrol.api_cacert"],
        api_server_name=v["enrol.api_server_name"], package=v["enrol.package"], allow=v["enrol.allow"],
        parent_zones=v["enrol.parent_zones"], global_zones=v["enrol.global_zones"], reserved=v["enrol.reserved"],
        zones=v["enrol.zones"],
        interval=v["enrol.interval"], stage_timeout=v["enrol.stage_timeout"])
