"""The value parsers of ``config.SCHEMA``: pure, each raising ``Invalid`` with what was expected.

``config`` names the setting in front of the message, so a parser says only what is wrong
with the value.
"""
from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Any, Callable

from .consul.settings import Endpoint
from .errors import Invalid
from .snapshot.layout import valid_node, valid_prefix
from .tree.globs import compile_pattern


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(v, str) and v.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise Invalid(f"expected true or false, got {v!r}")


def _number(kind: type, lo: float, hi: float) -> Callable[[Any], Any]:
    def parse(v: Any):
        if isinstance(v, bool) or (kind is int and isinstance(v, float) and not v.is_integer()):
            raise Invalid(f"expected {'a whole' if kind is int else 'a'} number, got {v!r}")
        try:
            n = kind(v)
        except (TypeError, ValueError):
            raise Invalid(f"expected a number, got {v!r}") from None
        if not lo <= n <= hi:
            raise Invalid(f"must be between {lo:g} and {hi:g}, got {n:g}")
        return n
    return parse


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if v not in options:
            raise Invalid(f"must be one of {', '.join(options)}, got {v!r}")
        return v
    return parse


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise Invalid(f"expected a string, got {type(v).__name__}")
    return v


def _items(v: Any, expected: str) -> list[str]:
    """A list setting's items: a TOML list of strings, or one comma-separated string (from the
    environment or a flag), whose items are stripped."""
    items = [p.strip() for p in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise Invalid(expected)
    return list(items)


def _patterns(v: Any) -> tuple[str, ...]:
    items = _items(v, "expected a list of glob patterns")
    out = tuple(p for p in items if p)
    for p in out:
        try:
            compile_pattern(p)
        except ValueError as exc:
            raise Invalid(f"pattern {p!r}: {exc}") from None
    return out


def _prefix(v: Any) -> str:
    v = _str(v).strip("/")
    if not valid_prefix(v):
        raise Invalid(f"{v!r} is not a KV prefix like statesync/icinga2")
    return v


def _node(v: Any) -> str:
    v = _str(v)
    if not valid_node(v):
        raise Invalid(f"{v!r} is not a node name (letters, digits, '.', '_', '-')")
    return v


def _path(v: Any) -> str:
    v = _str(v)
    if not v:
        raise Invalid("must not be empty")
    return v


def parse_addr(text: str, default_scheme: str = "http") -> Endpoint:
    """Parse ``[http://|https://]host[:port][/path]`` (IPv6 in brackets) into an Endpoint.

    A path (Consul behind a reverse proxy at a prefix) is taken after an explicit scheme only,
    as the consul CLI takes it. Credentials (``user:password@``) are refused without a word of
    them in the message: the consul CLI does not take them there either (it dials the whole
    ``user:password@host`` and fails); basic auth is CONSUL_HTTP_AUTH."""
    text = text.strip()
    _no_credentials(text)
    scheme, path = default_scheme, ""
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme == "unix":
            # The consul CLI takes unix:///path/to/socket; python-consul2's transport and ours speak TCP only.
            raise Invalid("unix sockets (unix://) are not supported: give host:port, http://host:port or "
                          "https://host:port")
        if scheme not in ("http", "https"):
            raise Invalid(f"scheme {scheme!r} is not supported (use http:// or https://)")
        text, slash, path = text.partition("/")
        path = _url_path(path) if slash else ""
    text = text.rstrip("/")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")) or not _ipv6(host):
            raise Invalid(f"{text!r} is not [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
        if ":" in host and not _ipv6(host):
            raise Invalid(f"{text!r} is not host[:port] (an IPv6 address with a port goes in brackets: [::1]:8500)")
    if not host or "/" in host:
        raise Invalid(f"{text!r} is not host[:port]")
    try:
        port = int(port_text) if port_text else 8500
    except ValueError:
        raise Invalid(f"port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise Invalid(f"port {port} is out of range")
    return Endpoint(scheme, host, port, path)


def _no_credentials(text: str) -> None:
    if "@" in text:
        raise Invalid(f"credentials in the address ({redacted(text)}) are not supported: give them in "
                      f"CONSUL_HTTP_AUTH or consul.auth_file (STATESYNC_CONSUL_AUTH_FILE)")


def redacted(addr: str) -> str:
    """``addr`` as far as it can be shown: its scheme and what follows its last '@', never what
    precedes it (a password may hold '/', ':', ',' or '://')."""
    if "@" not in addr:
        return addr
    scheme = next((s for s in ("http://", "https://") if addr.startswith(s)), "")
    return f"{scheme}…@{addr.rpartition('@')[2]}"


def _ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


def _url_path(path: str) -> str:
    """The prefix a reverse proxy serves Consul under: '/'-led, without a trailing '/'."""
    path = path.strip("/")
    if any(c in path for c in "?#%") or not all(" " < c < "\x7f" for c in path):
        raise Invalid(f"path /{path!r} must be plain: no query, fragment, escapes, spaces or controls")
    return f"/{path}" if path else ""


_SERVER_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$|^[0-9A-Fa-f:.]+$")


def _server_name(v: Any) -> str:
    """A DNS name or IP address to verify Consul's certificate against; empty means unset. A port
    is dropped, as the consul CLI drops it (``consul.example.com:8501``, ``[::1]:8501``)."""
    v = _str(v).strip()
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\](:\d{1,5})?$|^([^:]+):\d{1,5}$", v)
    if m:
        v = m.group(1) or m.group(3)
    if v and not _SERVER_NAME.match(v):
        raise Invalid(f"{v!r} is not a host name such as consul.example.com or server.dc1.consul")
    return v


def _opt_path(v: Any) -> str:
    return _str(v).strip()


def _addrs(v: Any) -> tuple[str, ...]:
    # Before splitting at commas: a password may hold one, and a piece of it would be echoed.
    for a in [v] if isinstance(v, str) else v if isinstance(v, (list, tuple)) else []:
        if isinstance(a, str):
            _no_credentials(a)
    items = [a.strip() for a in _items(v, "expected an address or a list of addresses") if a.strip()]
    if not items:
        raise Invalid("expected an address or a list of addresses")
    for a in items:
        parse_addr(a)
    return tuple(items)


def _adapt(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Use a parser of another module (raising ValueError) like our own."""
    def wrapped(v: Any) -> Any:
        try:
            return parse(v)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
    return wrapped


_ROOT_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _roots(v: Any) -> tuple[tuple[str, str], ...]:
    """``name=relative/path`` items (a comma-separated string or a list): named subtrees of the
    root, mirrored together in one snapshot. One must be ``state`` (where ca/ and certs/ live)."""
    items = _items(v, "expected name=path items, such as state=var/lib/icinga2,config=etc/icinga2")
    out: dict[str, str] = {}
    for item in (p.strip() for p in items if p.strip()):
        name, eq, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not eq or not _ROOT_NAME.match(name):
            raise Invalid(f"{item!r} is not name=path (a name of lower-case letters, digits, '_', '-')")
        norm = posixpath.normpath(path) if path else ""
        if not path or path.startswith("/") or norm in (".", "..") or norm.startswith("../") or "\0" in path:
            raise Invalid(f"{name}: {path!r} must be a path below the root, such as var/lib/icinga2")
        if norm.split("/")[0].startswith(".statesync"):
            raise Invalid(f"{name}: {path!r} is statesync's own")
        if name in out:
            raise Invalid(f"{name} is given twice")
        for other_name, other in out.items():
            if norm == other or norm.startswith(other + "/") or other.startswith(norm + "/"):
                raise Invalid(f"{name} ({norm}) and {other_name} ({other}) overlap")
        out[name] = norm
    if out and "state" not in out:
        raise Invalid("one root must be named state: the directory that holds ca/ and certs/")
    return tuple(sorted(out.items()))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _duration(v: Any) -> float:
    """Seconds, as a number or a string such as 90s, 30m, 24h, 7d, 2w."""
    if isinstance(v, bool):
        raise Invalid(f"expected a duration such as 24h, got {v!r}")
    if isinstance(v, (int, float)):
        seconds = float(v)
    else:
        m = _DURATION.match(_str(v))
        if not m:
            raise Invalid(f"expected a duration such as 90s, 30m, 24h or 7d, got {v!r}")
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    if not 0 <= seconds <= 3650 * 86400:
        raise Invalid(f"must be between 0 and 3650d, got {v!r}")
    return seconds


def _min_intervals(v: Any) -> tuple[tuple[str, float], ...]:
    """``pattern=duration`` items: files matching the glob are committed at most that often."""
    items = _items(v, "expected pattern=duration items, such as var/lib/icinga2/icinga2.state=15m")
    out = []
    for item in (p.strip() for p in items if p.strip()):
        pattern, eq, duration = item.rpartition("=")
        if not eq or not pattern.strip():
            raise Invalid(f"{item!r} is not pattern=duration")
        try:
            compile_pattern(pattern.strip())
        except ValueError as exc:
            raise Invalid(f"pattern {pattern.strip()!r}: {exc}") from None
        out.append((pattern.strip(), _duration(duration)))
    return tuple(out)
