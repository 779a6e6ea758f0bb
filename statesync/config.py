"""Settings: defaults, then the TOML file, then the environment, then flags; validated, frozen.

Every setting is declared once in ``schema.SCHEMA`` with its TOML path, its environment
variable and its parser, so every error names the setting it is about. Consul's own
variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...) are honoured as its CLI does;
the STATESYNC_* variables, being more specific, win over them. Every error is reported at
once, each with where its value came from (as borgmatic validates its configuration), so
that fixing a deployment takes one round, not one per mistake.
"""
from __future__ import annotations

import difflib
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .consul.settings import FENCED_VALUE_MAX, ConsulSettings, LockSettings
from .errors import ConfigError, ConfigErrors, KeyFormatError
from .errors import Invalid as _Invalid
from .parsing import parse_addr
from .schema import (  # noqa: F401 (part of config's interface)
    BY_NAME,
    CONFIG_SECRETS,
    DEFAULT_ENCRYPT,
    DEFAULT_EXCLUDES,
    DEFAULT_ROOT,
    READY_FILE_NAME,
    SCHEMA,
    EnrolSettings,
    GuardSettings,
    Setting,
    fill,
)
from .snapshot.crypto import Sealer, parse_key
from .tree.globs import PathFilter, rebase
from .tree.sealing import Sealing
from .snapshot.layout import Layout, valid_node
from .tree.roots import resolve as resolve_roots

# STATESYNC_* variables that are no setting: the config file, the consul binary the demo runs,
# and the steps scripts/setup.sh takes. Any other STATESYNC_* name is a typo.
# STATESYNC_API_USER and STATESYNC_API_PASSWORD_FILE are compose/icinga-start.sh's (the master's ApiUser).
OTHER_VARIABLES = ("STATESYNC_CONFIG", "STATESYNC_CONSUL_BIN", "STATESYNC_SETUP_ONLY", "STATESYNC_API_USER",
                   "STATESYNC_API_PASSWORD_FILE")
KNOWN_VARIABLES = frozenset(OTHER_VARIABLES + tuple(v for s in SCHEMA for v in s.env if v.startswith("STATESYNC_")))
# Consul Enterprise's variables. An OSS server ignores ?ns= and ?partition=, so sending them proves
# nothing; ignoring them would put the state in the default namespace while the operator believes
# it is kept apart. Refused unless they name the default.
ENTERPRISE_VARIABLES = ("CONSUL_NAMESPACE", "CONSUL_PARTITION")
# What each guard trigger cannot work without.
_REQUIRED = {
    "api": ("guard.api_url", "guard.api_user", "guard.api_password_file"),
    "signal": ("guard.pidfile",),
    "docker": ("guard.docker_socket", "guard.docker_container"),
    "command": ("guard.command",),
    "exit": (),
}


@dataclass(frozen=True)
class Config:
    """The validated settings of one statesync invocation; a field named after a setting
    (``log_format``: ``log.format``) holds its parsed value, the others are derived."""

    root: Path
    prefix: str
    node: str
    role: str | None
    path_filter: PathFilter
    keep: int
    chunk_size: int
    debounce: float
    max_wait: float
    full_scan_interval: float
    gc_interval: float
    gc_grace: float
    consul: ConsulSettings = field(repr=False)
    max_drop: float
    on_conflict: str
    sealing: Sealing | None = field(repr=False)
    ready_file: Path
    log_format: str
    log_level: str
    http_bind: str
    http_port: int
    health_max_failures: int
    guard: GuardSettings
    enrol: EnrolSettings
    lock: LockSettings
    # (name, path below root) pairs, sorted; () when the whole root is the state
    roots: tuple[tuple[str, str], ...]
    keep_within: float
    keep_hourly: int
    keep_daily: int
    min_interval: tuple[tuple[str, float], ...]
    compression: str

    @property
    def layout(self) -> Layout:
        return Layout(self.prefix, self.node)

    def in_state(self, rel: str) -> str:
        """``rel`` (relative to the state directory) as a snapshot path, which is relative to root."""
        return f"{dict(self.roots)['state']}/{rel}" if self.roots else rel

    @property
    def state_dir(self) -> Path:
        """Where Icinga 2 keeps ca/ and certs/: the root, or its subtree named state."""
        return self.root / dict(self.roots)["state"] if self.roots else self.root


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _flatten(doc: Mapping, parent: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{parent}.{key}" if parent else key
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _read_file(path: str, errors: list[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        errors.append(f"config: file {path} does not exist")
    except OSError as exc:
        errors.append(f"config: cannot read {path}: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"config: {path} is not valid TOML: {exc}")
    except UnicodeDecodeError as exc:
        errors.append(f"config: {path} is not valid TOML: not UTF-8 text (byte {exc.start})")
    else:
        values = _flatten(doc)
        errors += [f"{name}: unknown setting in {path}{_did_you_mean(name, BY_NAME)}"
                   for name in values if name not in BY_NAME]
        return {name: value for name, value in values.items() if name in BY_NAME}
    return {}


def _from_env(env: Mapping[str, str], errors: list[str]) -> dict[str, tuple[Any, str]]:
    """The settings the environment gives, each with the variable it came from."""
    errors += [f"unknown variable {var}{_did_you_mean(var, KNOWN_VARIABLES)}"
               for var in sorted(env) if var.startswith("STATESYNC_") and var not in KNOWN_VARIABLES]
    errors += [f"{var}: Consul Enterprise's namespaces and partitions are not supported; statesync keeps its "
               f"keys under prefix (STATESYNC_PREFIX) in the default one: unset {var}"
               for var in ENTERPRISE_VARIABLES if env.get(var, "").strip() not in ("", "default")]
    values: dict[str, tuple[Any, str]] = {}
    for s in SCHEMA:
        for var in s.env:  # later variables (STATESYNC_*) win
            if env.get(var, "") != "":
                values[s.name] = (env[var], var)
    return values


def _read_secret(path: str, setting: str, may_be_empty: bool = True) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:  # the position only: the bytes are secret
        raise ConfigError(f"{setting}: {path} is not UTF-8 text (byte {exc.start})") from None
    if not text and not may_be_empty:
        raise ConfigError(f"{setting}: {path} is empty")
    return text


class _Failed(Exception):
    """A check read a setting whose value did not parse: that error is reported already."""


class _Parsed(dict):
    """The parsed values; reading one that failed to parse skips the check that reads it."""

    def __init__(self, values: dict[str, Any], failed: set[str]):
        super().__init__(values)
        self.failed = failed

    def __getitem__(self, name: str) -> Any:
        if name in self.failed:
            raise _Failed(name)
        return super().__getitem__(name)


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
         config_file: str | None = None) -> Config:
    """Merge defaults, file, environment and flags into a Config.

    ``flags`` maps setting names (``consul.addr``) to values given on the command line;
    None values are ignored. Raises ConfigError naming the bad setting; with several,
    ConfigErrors, whose ``lines`` name each setting and where its value came from.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = config_file or env.get("STATESYNC_CONFIG") or None
    errors: list[str] = []
    given: dict[str, tuple[Any, str]] = {}  # setting -> (value, where it came from)
    if config_file:
        given.update((k, (v, f"in {config_file}")) for k, v in _read_file(config_file, errors).items())
    given.update((k, (v, f"from {var}")) for k, (v, var) in _from_env(env, errors).items())
    given.update((k, (v, "from the command line")) for k, v in flags.items())
    values: dict[str, Any] = {}
    failed: set[str] = set()
    for s in SCHEMA:
        v = given[s.name][0] if s.name in given else s.default
        try:
            values[s.name] = None if v is None else s.parse(v)
        except _Invalid as exc:
            errors.append(f"{s.name}: {exc}")
            failed.add(s.name)
    if "encrypt" not in given and "roots" not in failed:
        values["encrypt"] = default_encrypt(values["roots"])
    cfg = _build(_Parsed(values, failed), errors)
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigErrors([f"{e} ({_source(e, given)})" if _source(e, given) else e for e in errors])
    return cfg


def _source(message: str, given: Mapping[str, tuple[Any, str]]) -> str:
    """Where the value of the setting ``message`` is about came from; "" for a message about no setting."""
    name = message.partition(":")[0]
    if name not in BY_NAME:
        return ""
    if name in given:
        return given[name][1]
    because = message.partition(" required when ")[2].partition(" ")[0]
    return f"{because} {given[because][1]}" if because in given else "not set"


def default_encrypt(roots: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The secrets encrypted by default, relative to root: DEFAULT_ENCRYPT below the state
    subtree, and CONFIG_SECRETS below the config subtree when there is one."""
    named = dict(roots)
    return rebase(named.get("state", ""), DEFAULT_ENCRYPT) + (
        rebase(named["config"], CONFIG_SECRETS) if "config" in named else ())


def _build(v: _Parsed, errors: list[str]) -> Config | None:
    """The Config, or None when ``errors`` (to which every failed check adds its line) is not empty."""
    def attempt(check: Callable[..., Any], *args: Any) -> Any:
        try:
            return check(*args)
        except _Failed:
            return None
        except ConfigError as exc:
            errors.append(str(exc))
            return None

    attempt(_timing, v)
    attempt(_fenced_chunks, v)
    node = attempt(_node, v)
    consul = attempt(_consul, v, attempt)
    sealer = attempt(_sealer, v)
    # Resolved once, here, for every command: docs/FORMAT.md, "Several roots", says the rule.
    root = attempt(lambda: resolve_roots(Path(v["root"]).absolute(), v["roots"]))
    guard = attempt(_guard, v, attempt)
    enrol = attempt(_enrol, v, attempt)
    if errors:
        return None
    state = dict(v["roots"]).get("state", "")
    excludes = (rebase(state, DEFAULT_EXCLUDES) if v["default_excludes"] else ()) + v["exclude"]
    return fill(Config, v, root=root, node=node, consul=consul, guard=guard, enrol=enrol,
                sealing=Sealing(sealer, node, v["encrypt"], v["encrypt_all"], v["allow_plaintext_secrets"]),
                ready_file=Path(v["ready_file"]).absolute() if v["ready_file"] else root / READY_FILE_NAME,
                path_filter=PathFilter(v["include"], excludes, tuple(p for _, p in v["roots"])),
                lock=fill(LockSettings, v, "lock"))


def _timing(v: _Parsed) -> None:
    if v["max_wait"] < v["debounce"]:
        raise ConfigError(f"max_wait: must be at least debounce ({v['debounce']:g}), got {v['max_wait']:g}")


def _fenced_chunks(v: _Parsed) -> None:
    if v["lock.enabled"] and v["chunk_size"] > FENCED_VALUE_MAX:
        # Fenced writes travel inside transactions, whose body Consul caps at 512 KiB.
        raise ConfigError(f"chunk_size: at most {FENCED_VALUE_MAX} while lock.enabled is on, got {v['chunk_size']}")


def _node(v: _Parsed) -> str:
    node = v["node"] or socket.gethostname().split(".")[0]
    if not valid_node(node):
        raise ConfigError(f"node: host name {node!r} is not a usable node name; set node explicitly")
    return node


def _sealer(v: _Parsed) -> Sealer | None:
    """The Sealer of the configured key, or None without one; the file wins over the variable."""
    name, text = "encryption_key", v["encryption_key"]
    if v["encryption_key_file"]:
        name, text = "encryption_key_file", _read_secret(v["encryption_key_file"], "encryption_key_file")
    if not text:
        if v["encrypt_all"]:
            raise ConfigError("encrypt_all: needs an encryption key (encryption_key_file)")
        return None
    try:
        return Sealer(parse_key(text))
    except KeyFormatError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _token(v: _Parsed) -> str:
    token, name = v["consul.token"], "consul.token"
    if v["consul.token_file"]:
        token, name = _read_secret(v["consul.token_file"], "consul.token_file"), "consul.token_file"
    if not all(" " < c < "\x7f" for c in token):
        # It travels in an HTTP header, where such characters fail far from here, or worse.
        raise ConfigError(f"{name}: the token holds spaces, control or non-ASCII characters")
    return token


def _auth(v: _Parsed) -> str:
    auth, name = v["consul.auth"], "consul.auth"
    if v["consul.auth_file"]:
        auth, name = _read_secret(v["consul.auth_file"], "consul.auth_file"), "consul.auth_file"
    if not all(c >= " " and c != "\x7f" for c in auth):
        raise ConfigError(f"{name}: holds control characters; expected user:password on one line")
    return auth


def _file(v: _Parsed, name: str) -> None:
    if v[name] and not os.path.isfile(v[name]):
        raise ConfigError(f"{name}: file {v[name]} does not exist")


def _consul(v: _Parsed, attempt: Callable[..., Any]) -> ConsulSettings:
    token, auth = attempt(_token, v), attempt(_auth, v)
    for name in ("consul.cacert", "consul.client_cert", "consul.client_key"):
        attempt(_file, v, name)
    if v["consul.capath"] and not os.path.isdir(v["consul.capath"]):
        raise ConfigError(f"consul.capath: directory {v['consul.capath']} does not exist")
    if bool(v["consul.client_cert"]) != bool(v["consul.client_key"]):
        raise ConfigError("consul.client_key: a client certificate needs its key and the other way round")
    default_scheme = "https" if v["consul.ssl"] else "http"
    endpoints = tuple(parse_addr(a, default_scheme) for a in v["consul.addr"])
    return fill(ConsulSettings, v, "consul", endpoints=endpoints, token=token, auth=auth, verify=v["consul.ssl_verify"])


def _required(v: _Parsed, name: str, because: str) -> None:
    if not v[name]:
        raise ConfigError(f"{name}: required when {because} is {v[because]}")


def _guard(v: _Parsed, attempt: Callable[..., Any]) -> GuardSettings:
    """The trigger has what it needs, the API password is read from its file, a given CA file exists."""
    trigger = v["guard.trigger"]
    for name in _REQUIRED[trigger]:
        attempt(_required, v, name, "guard.trigger")
    attempt(_file, v, "guard.api_cacert")
    password = v["guard.api_password_file"] and _read_secret(v["guard.api_password_file"],
                                                              "guard.api_password_file", may_be_empty=False)
    # Plain HTTP would send the password in the clear; allowed only on loopback.
    if (v["guard.api_url"].startswith("http://") and trigger == "api" and password
            and (urlsplit(v["guard.api_url"]).hostname or "") not in ("127.0.0.1", "::1", "localhost")):
        raise ConfigError("guard.api_url: use https:// (plain http:// is accepted on loopback only)")
    return fill(GuardSettings, v, "guard", api_password=password)


def _enrol(v: _Parsed, attempt: Callable[..., Any]) -> EnrolSettings:
    """A master that enrols needs the API password; the zones a satellite may name are not empty."""
    if v["enrol.enabled"] and v["role"] == "master" and not v["enrol.api_password_file"]:
        attempt(lambda: _fail("enrol.api_password_file: required when enrol.enabled is on for a master "
                              "(the Icinga 2 API user that stages the satellites' zones)"))
    attempt(_file, v, "enrol.api_cacert")
    if v["enrol.parent_zone"] == "":
        attempt(lambda: _fail("enrol.parent_zone: must not be empty"))
    if not v["enrol.parent_zones"]:
        attempt(lambda: _fail("enrol.parent_zones: name at least one zone satellites may be children of"))
    password = v["enrol.api_password_file"] and _read_secret(v["enrol.api_password_file"],
                                                             "enrol.api_password_file", may_be_empty=False)
    return fill(EnrolSettings, v, "enrol", api_password=password)


def _fail(message: str) -> None:
    raise ConfigError(message)
