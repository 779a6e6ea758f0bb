"""A satellite's registration at ``<prefix>/satellites/<cn>``: the document, its judging, its rendering.

A satellite's sidecar writes one JSON object (``encode``); the master's sidecar judges every
one against its ``Policy`` (``judge`` for one key, ``accept`` for all of them, which also
cross-checks them against each other) and renders the accepted ones as Icinga 2 Endpoint and
Zone objects (``render``), one file per parent zone of its config package. Everything a
registration says is hostile until judged: names are rendered into Icinga config between
double quotes, so ``NAME_RE`` is strict and ``render`` checks every name again.

Pure: no I/O and no clock.
"""
from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import json
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime

from ..errors import CorruptData
from ..jsonload import TooDeep, loads
from ..snapshot.layout import valid_node, valid_sha256

VERSION = 1
MAX_DOCUMENT_BYTES = 4096
MAX_NAME = 253
RENDERED_NAME = "statesync-satellites.conf"

NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?")
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# long enough to recognise a value in a log line, short enough that no value floods it
_SHOWN = 64

_HEADER = ("// Managed by statesync: the satellites accepted from the registrations in Consul.\n"
           "// Do not edit: statesync replaces this file whenever the registrations change.\n")


def valid_name(s: object) -> bool:
    """True for a CN or zone name that is safe between double quotes in Icinga config."""
    return isinstance(s, str) and NAME_RE.fullmatch(s) is not None


def valid_host(s: object) -> bool:
    """True for a DNS name or an IPv4/IPv6 literal of at most 253 characters."""
    if not isinstance(s, str) or not s or len(s) > MAX_NAME or not s.isascii():
        return False
    # ipaddress accepts an IPv6 scope id of any characters ("fe80::1%\"; x"), quotes included
    if "%" in s:
        return False
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        pass
    labels = s.split(".")
    # an all-numeric last label is a mistyped address, never a DNS name (RFC 3696)
    return all(_LABEL_RE.fullmatch(label) for label in labels) and not labels[-1].isdigit()


def valid_port(p: object) -> bool:
    """True for an int 0..65535; 0 means Icinga's default. A bool is not a port."""
    return type(p) is int and 0 <= p <= 65535


def shown(value: object) -> str:
    """``value`` as it may appear in a log line: ASCII, escaped, quoted, and truncated."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _SHOWN:
        return f"{text[:_SHOWN]!a}... ({len(text)} characters)"
    return ascii(text)


@dataclass(frozen=True)
class Registration:
    """What a satellite registers. ``host`` empty: the satellite connects to the master."""

    cn: str
    zone: str
    parent_zone: str
    key_sha256: str
    request_sha256: str
    ca_spki_sha256: str
    node: str
    time: str
    host: str = ""
    port: int = 0
    version: int = VERSION


_REQUIRED = ("cn", "zone", "parent_zone", "key_sha256", "request_sha256", "ca_spki_sha256", "node", "time")
_OPTIONAL = {"host": ("", str), "port": (0, int)}


def encode(reg: Registration) -> bytes:
    """The stored form: compact JSON with sorted keys. ValueError when it would be too large to accept."""
    raw = json.dumps(asdict(reg), sort_keys=True, separators=(",", ":")).encode()
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"registration is {len(raw)} bytes, more than {MAX_DOCUMENT_BYTES}")
    return raw


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # with duplicate keys, what the master reads could differ from what another reader sees
    out = {}
    for k, v in pairs:
        if k in out:
            raise CorruptData(f"registration names the field {shown(k)} twice")
        out[k] = v
    return out


def _no_constant(name: str) -> object:
    raise CorruptData(f"registration holds {name}, which is not JSON")


def decode(raw: bytes) -> Registration:
    """Parse a stored registration; raise CorruptData naming the problem. Unknown fields are ignored."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CorruptData(f"registration is too large ({len(raw)} bytes, at most {MAX_DOCUMENT_BYTES})")
    try:
        doc = loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise CorruptData("registration is not UTF-8") from None
    except TooDeep as exc:
        raise CorruptData(f"registration {exc}") from None
    except ValueError:
        raise CorruptData("registration is not JSON") from None
    if not isinstance(doc, dict):
        raise CorruptData(f"registration is not a JSON object but a {type(doc).__name__}")
    # the version first: a newer document may lack or redefine every other field
    version = doc.get("version")
    if type(version) is not int:
        raise CorruptData("registration field 'version' is missing or not an integer")
    if version > VERSION:
        raise CorruptData(f"registration version {version} is newer than {VERSION}, the newest this statesync understands")
    if version < 1:
        raise CorruptData(f"registration version {version} does not exist")
    values: dict[str, object] = {}
    for name in _REQUIRED:
        if name not in doc:
            raise CorruptData(f"registration field {name!r} is missing")
        if not isinstance(doc[name], str):
            raise CorruptData(f"registration field {name!r} is not a string")
        values[name] = doc[name]
    for name, (default, kind) in _OPTIONAL.items():
        value = doc.get(name, default)
        if type(value) is not kind:
            raise CorruptData(f"registration field {name!r} is not {'a string' if kind is str else 'an integer'}")
        values[name] = value
    return Registration(version=version, **values)


@dataclass(frozen=True)
class Policy:
    """What the master accepts. ``reserved`` holds names no satellite may take, whatever their case;
    ``defined_zones`` the zones Icinga runs from outside the package (zones.conf, other packages);
    ``zones`` the operator's (CN glob, zone) pairs (``enrol.zones``, see ``authorised_zones``)."""

    ca_spki_sha256: str
    allow: tuple[str, ...] = ("*",)
    parent_zones: tuple[str, ...] = ("master",)
    reserved: frozenset[str] = frozenset()
    max_endpoints_per_zone: int = 2
    zones: tuple[tuple[str, str], ...] = ()
    defined_zones: frozenset[str] = frozenset()


def authorised_zones(cn: str, zones: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The zones ``cn`` may register. The zone is authorised by the master, never claimed by the
    satellite: the zones of every ``(glob, zone)`` pair whose glob matches the CN; without one, the
    zone named after the CN, unless that name is a zone the pairs hand out (an HA pair's zone is
    theirs alone, whatever its case)."""
    mapped = tuple(dict.fromkeys(zone for glob, zone in zones if fnmatch.fnmatchcase(cn, glob)))
    if mapped:
        return mapped
    if _fold(cn) in {_fold(zone) for _, zone in zones}:
        return ()
    return (cn,)


@dataclass(frozen=True)
class Rejection:
    """A registration the master ignores. ``key`` is the raw CN from the key name, not safe to log
    as is; ``reason`` is one safe line, and ``str()`` of a rejection is both, safely."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"satellite {shown(self.key)}: {self.reason}"


def _fold(name: str) -> str:
    return name.casefold()


def _problem(key_cn: str, raw: bytes, policy: Policy) -> str | Registration:
    if not valid_name(key_cn):
        return f"the key's name {shown(key_cn)} is not a valid CN"
    try:
        reg = decode(raw)
    except CorruptData as exc:
        return str(exc)
    if reg.cn != key_cn:
        return f"cn {shown(reg.cn)} is not the key's name"
    for name in ("zone", "parent_zone"):
        if not valid_name(getattr(reg, name)):
            return f"{name} {shown(getattr(reg, name))} is not a valid name"
    if reg.host and not valid_host(reg.host):
        return f"host {shown(reg.host)} is neither a DNS name nor an IP address"
    if not valid_port(reg.port):
        return f"port {shown(reg.port)} is not 0..65535"
    reserved = {_fold(r) for r in policy.reserved}
    parents = {_fold(p) for p in policy.parent_zones}
    for name in ("cn", "zone"):
        value = getattr(reg, name)
        if _fold(value) in reserved:
            return f"{name} {shown(value)} is reserved"
        if _fold(value) in parents:
            return f"{name} {shown(value)} is a parent zone"
    if _fold(reg.zone) in {_fold(z) for z in policy.defined_zones}:
        return f"zone {shown(reg.zone)} is defined outside statesync's package (zones.conf or another package)"
    if reg.parent_zone not in policy.parent_zones:
        return f"parent_zone {shown(reg.parent_zone)} is not one of {', '.join(sorted(policy.parent_zones))}"
    if reg.ca_spki_sha256 != policy.ca_spki_sha256:
        return f"registered under another CA (ca_spki_sha256 {shown(reg.ca_spki_sha256)})"
    if not any(fnmatch.fnmatchcase(reg.cn, glob) for glob in policy.allow):
        return "cn matches no allowed pattern"
    authorised = authorised_zones(reg.cn, policy.zones)
    if reg.zone not in authorised:
        may = (f"it may register {', '.join(shown(z) for z in authorised)}" if authorised
               else "no zone is authorised for it")
        return (f"zone {shown(reg.zone)} is not authorised for this cn ({may}; "
                f"enrol.zones on the master authorises others)")
    for name in ("key_sha256", "request_sha256"):
        if not valid_sha256(getattr(reg, name)):
            return f"{name} {shown(getattr(reg, name))} is not 64 lowercase hex digits"
    if not valid_node(reg.node):
        return f"node {shown(reg.node)} is not a valid node name"
    try:
        datetime.fromisoformat(reg.time)
    except ValueError:
        return f"time {shown(reg.time)} is not an ISO 8601 time"
    return reg


def judge(key_cn: str, raw: bytes, policy: Policy) -> Registration | Rejection:
    """The registration stored at ``satellites/<key_cn>`` on its own: accepted, or why not."""
    out = _problem(key_cn, raw, policy)
    return out if isinstance(out, Registration) else Rejection(key_cn, out)


def _quoted(name: str) -> str:
    if not valid_name(name):
        raise ValueError(f"refusing to render {shown(name)}: not a valid name")
    return f'"{name}"'


# Each rendered Endpoint carries the key it was accepted with, so that the active package
# itself says which (CN, key) pairs are accepted: Icinga deletes old request files, and an
# accepted satellite must not drop out of the package with its request.
_ACCEPTED_RE = re.compile(r'^object Endpoint "([^"]+)" \{ // key_sha256 ([0-9a-f]{64})$', re.M)
_ZONE_RE = re.compile(r'^object Zone "([^"]+)" \{\n  endpoints = \[ ([^\]\n]*) \]\n  parent = "([^"]+)"\n\}$', re.M)


def _endpoint(reg: Registration) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", reg.key_sha256):
        raise ValueError(f"refusing to render key hash {shown(reg.key_sha256)}")
    lines = [f"object Endpoint {_quoted(reg.cn)} {{ // key_sha256 {reg.key_sha256}"]
    if reg.host:
        if not valid_host(reg.host):
            raise ValueError(f"refusing to render host {shown(reg.host)}")
        lines.append(f'  host = "{reg.host}"')
    if reg.port:
        if not valid_port(reg.port):
            raise ValueError(f"refusing to render port {shown(reg.port)}")
        lines.append(f'  port = "{reg.port}"')
    return "\n".join(lines + ["}\n"])


def render(accepted: tuple[Registration, ...] | list[Registration]) -> dict[str, str]:
    """The config package's files, path -> text: one per parent zone, the same bytes for the same
    registrations in any order. ValueError for anything ``accept`` would never have let through."""
    zones: dict[str, list[Registration]] = defaultdict(list)
    seen: set[str] = set()
    for reg in sorted(accepted, key=lambda r: r.cn):
        if _fold(reg.cn) in seen:
            raise ValueError(f"refusing to render endpoint {shown(reg.cn)} twice")
        seen.add(_fold(reg.cn))
        zones[reg.zone].append(reg)
    parts: dict[str, list[str]] = defaultdict(list)
    for zone in sorted(zones):
        members = zones[zone]
        parent = members[0].parent_zone
        if any(r.parent_zone != parent for r in members):
            raise ValueError(f"refusing to render zone {shown(zone)} with two parent zones")
        parts[parent] += [_endpoint(r) for r in members]
        parts[parent].append(f"object Zone {_quoted(zone)} {{\n"
                             f"  endpoints = [ {', '.join(_quoted(r.cn) for r in members)} ]\n"
                             f"  parent = {_quoted(parent)}\n}}\n")
    return {f"zones.d/{parent}/{RENDERED_NAME}": "\n".join([_HEADER, *parts[parent]])
            for parent in sorted(parts)}


@dataclass(frozen=True)
class Accepted:
    """What the active package accepted for one CN."""

    key_sha256: str
    zone: str
    parent_zone: str


def accepted_entries(files: dict[str, str]) -> dict[str, Accepted]:
    """CN -> what a rendered package accepted ({} for none or foreign text): each Endpoint's
    recorded key, and the Zone that lists it (the path names the parent)."""
    keys: dict[str, str] = {}
    zone_of: dict[str, tuple[str, str]] = {}
    for path in sorted(files):
        text = files[path]
        keys.update((cn, key) for cn, key in _ACCEPTED_RE.findall(text) if valid_name(cn))
        for zone, members, parent in _ZONE_RE.findall(text):
            for cn in re.findall(r'"([^"]+)"', members):
                zone_of[cn] = (zone, parent)
    return {cn: Accepted(key, *zone_of[cn]) for cn, key in keys.items() if cn in zone_of}


def digest(reg: Registration) -> str:
    """A short hash of what a registration renders: a left-out registration is tried again once it changes."""
    what = json.dumps([reg.cn, reg.zone, reg.parent_zone, reg.key_sha256, reg.host, reg.port])
    return hashlib.sha256(what.encode()).hexdigest()[:16]


def fingerprint_of(files: dict[str, str]) -> str:
    """SHA-256 (hex) of rendered files, paths included: equal exactly when the package is."""
    h = hashlib.sha256()
    for path in sorted(files):
        for part in (path.encode(), files[path].encode()):
            # a length before each part: no two different packages hash the same bytes
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()

