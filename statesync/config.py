"""Settings: defaults, then the TOML file, then the environment, then flags; validated, frozen.

Every setting is declared once in ``SCHEMA`` with its TOML path, its environment
variable and its parser, so every error names the setting it is about. Consul's own
variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...) are honoured as its CLI does;
the STATESYNC_* variables, being more specific, win over them.
"""
from __future__ import annotations

import difflib
import os
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .consul.settings import FENCED_VALUE_MAX, ConsulSettings, LockSettings
from .errors import ConfigError
from .guard import settings as gs
from .guard.settings import GuardSettings
from .enrol import settings as es
from .enrol.settings import EnrolSettings
from .snapshot.chunking import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from .snapshot.crypto import KeyFormatError, Sealer, Sealing, parse_key
from .snapshot.globs import PathFilter, rebase
from .snapshot.layout import Layout, valid_node
from .snapshot.roots import resolve as resolve_roots
from .parsing import Invalid as _Invalid
from .parsing import parse_addr  # noqa: F401 (part of config's interface)
from .parsing import (_addrs, _adapt, _bool, _choice, _duration, _min_intervals, _node, _number, _opt_path, _path,
                      _patterns, _prefix, _roots, _server_name, _str)

# Left out by default, after Icinga 2's documentation of /var/lib/icinga2 and its sources:
#   api/log/          the cluster replay log: rewritten constantly, replayed to peers that
#                     reconnect; a stale copy restored after a rebuild replays old messages.
#   api/zones-stage/  staging area of a config sync being validated; transient.
#   **/*.tmp.??????   Icinga 2 (2.14 on) replaces a file by writing NAME.tmp.XXXXXX (mkstemp: six
#                     letters or digits), fsync, rename over NAME (lib/base/atomic-file.cpp:28,33,
#                     108,122): icinga2.state (lib/base/configobject.cpp:480; 2.12 and 2.13 too),
#                     modified-attributes.conf (lib/icinga/icingaapplication.cpp:179), certs/ and
#                     ca/ (lib/remote/apilistener.cpp:353,377; jsonrpcconnection-pki.cpp:406,414),
#                     api/packages/ (lib/remote/configpackageutility.cpp:124-283,
#                     configobjectutility.cpp:207), every SaveJsonFile (lib/base/utility.cpp:1539).
#                     A snapshot would catch the file half written; the rename brings it whole.
#                     At any depth: /etc/icinga2 is written so too (lib/cli/nodeutility.cpp).
#   *.tmp, *.swp, *~  other tools' temporary files and editors' backups.
DEFAULT_EXCLUDES = ("api/log/", "api/zones-stage/", "**/*.tmp.??????", "**/*.tmp", "**/*.swp", "**/*~")
# Private keys: the CA's (signs every certificate of the cluster) and each node's.
DEFAULT_ENCRYPT = ("ca/ca.key", "certs/*.key")
# With roots, the two defaults above apply below the root named state, and these secrets of
# the root named config (/etc/icinga2) are added, below it:
#   constants.conf         the TicketSalt, from which every satellite's enrolment ticket is derived
#   conf.d/api-users.conf  the passwords of the API users
#   statesync-api-user.conf  the password of the sidecar's own API user (compose/icinga-start.sh)
# User-given include, exclude and encrypt patterns are relative to root, with roots or without.
CONFIG_SECRETS = ("constants.conf", "conf.d/api-users.conf", "statesync-api-user.conf")
DEFAULT_ROOT = "/var/lib/icinga2"
DEFAULT_PREFIX = "statesync/icinga2"
ROLES = ("master", "satellite")
ON_CONFLICT = ("refuse", "keep-local", "restore")
READY_FILE_NAME = ".statesync-ready"
LOG_FORMATS = ("auto", "json", "console")
COMPRESSION = ("zstd", "zlib", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    env: tuple[str, ...] = ()
    secret: bool = False


SCHEMA: tuple[Setting, ...] = (
    Setting("root", _path, DEFAULT_ROOT, ("STATESYNC_ROOT",)),
    # Named subtrees of root mirrored together, in one snapshot (the official image keeps both
    # /etc/icinga2 and /var/lib/icinga2 on one volume); empty: the whole root is the state.
    Setting("roots", _roots, (), ("STATESYNC_ROOTS",)),
    Setting("prefix", _prefix, DEFAULT_PREFIX, ("STATESYNC_PREFIX",)),
    Setting("node", _node, None, ("STATESYNC_NODE",)),
    # No default: a sidecar that guessed its role would publish a CA it should only guard, or the reverse.
    Setting("role", _choice(ROLES), None, ("STATESYNC_ROLE",)),
    Setting("include", _patterns, ("**",), ("STATESYNC_INCLUDE",)),
    # Empty, because patterns given add to DEFAULT_EXCLUDES: one extra pattern must not silently
    # drop them (default_excludes = false does that, on purpose).
    Setting("exclude", _patterns, (), ("STATESYNC_EXCLUDE",)),
    Setting("default_excludes", _bool, True, ("STATESYNC_DEFAULT_EXCLUDES",)),
    Setting("keep", _number(int, 1, 1000), 10, ("STATESYNC_KEEP",)),
    # Retention beyond the count (restic's forget rules): everything younger than keep_within,
    # the newest of each of the last keep_hourly hours and keep_daily days.
    Setting("keep_within", _duration, 0.0, ("STATESYNC_KEEP_WITHIN",)),
    Setting("keep_hourly", _number(int, 0, 100000), 0, ("STATESYNC_KEEP_HOURLY",)),
    Setting("keep_daily", _number(int, 0, 100000), 0, ("STATESYNC_KEEP_DAILY",)),
    # Files matching a pattern are committed at most that often (off by default: Icinga 2
    # itself dumps its state every 5 minutes); CA and certificate changes always go at once.
    Setting("min_interval", _min_intervals, (), ("STATESYNC_MIN_INTERVAL",)),
    # zstd -1 per chunk: the best ratio and eight times the speed of zlib -6 on Icinga 2 state
    # (measured, docs/FORMAT.md "Compressed chunks").
    Setting("compression", _choice(COMPRESSION), "zstd", ("STATESYNC_COMPRESSION",)),
    # A wiped or unmounted volume looks like a tree that lost most of its files at once.
    Setting("max_drop", _number(float, 0.0, 1.0), 0.9, ("STATESYNC_MAX_DROP",)),
    Setting("chunk_size", _number(int, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), 256 * 1024, ("STATESYNC_CHUNK_SIZE",)),
    Setting("debounce", _number(float, 0.0, 60.0), 0.5, ("STATESYNC_DEBOUNCE",)),
    Setting("max_wait", _number(float, 0.1, 600.0), 5.0, ("STATESYNC_MAX_WAIT",)),
    Setting("full_scan_interval", _number(float, 1.0, 86400.0), 300.0, ("STATESYNC_FULL_SCAN_INTERVAL",)),
    Setting("gc_interval", _number(float, 1.0, 86400.0), 600.0, ("STATESYNC_GC_INTERVAL",)),
    Setting("gc_grace", _number(float, 0.0, 86400.0), 300.0, ("STATESYNC_GC_GRACE",)),
    Setting("on_conflict", _choice(ON_CONFLICT), "refuse", ("STATESYNC_ON_CONFLICT",)),
    Setting("encryption_key_file", _opt_path, "", ("STATESYNC_ENCRYPTION_KEY_FILE",)),
    Setting("encryption_key", _str, "", ("STATESYNC_ENCRYPTION_KEY",), secret=True),
    Setting("encrypt", _patterns, DEFAULT_ENCRYPT, ("STATESYNC_ENCRYPT",)),
    Setting("encrypt_all", _bool, False, ("STATESYNC_ENCRYPT_ALL",)),
    Setting("allow_plaintext_secrets", _bool, False, ("STATESYNC_ALLOW_PLAINTEXT_SECRETS",)),
    Setting("ready_file", _opt_path, "", ("STATESYNC_READY_FILE",)),
    Setting("consul.addr", _addrs, ("127.0.0.1:8500",), ("CONSUL_HTTP_ADDR", "STATESYNC_CONSUL_ADDR")),
    Setting("consul.token", _str, "", ("CONSUL_HTTP_TOKEN",), secret=True),
    Setting("consul.token_file", _opt_path, "", ("CONSUL_HTTP_TOKEN_FILE", "STATESYNC_CONSUL_TOKEN_FILE")),
    # Basic auth for a reverse proxy in front of Consul: "user:password" or "user", as the consul CLI reads it.
    Setting("consul.auth", _str, "", ("CONSUL_HTTP_AUTH",), secret=True),
    Setting("consul.auth_file", _opt_path, "", ("STATESYNC_CONSUL_AUTH_FILE",)),
    Setting("consul.cacert", _opt_path, "", ("CONSUL_CACERT", "STATESYNC_CONSUL_CACERT")),
    Setting("consul.capath", _opt_path, "", ("CONSUL_CAPATH", "STATESYNC_CONSUL_CAPATH")),
    Setting("consul.tls_server_name", _server_name, "", ("CONSUL_TLS_SERVER_NAME", "STATESYNC_CONSUL_TLS_SERVER_NAME")),
    Setting("consul.client_cert", _opt_path, "", ("CONSUL_CLIENT_CERT", "STATESYNC_CONSUL_CLIENT_CERT")),
    Setting("consul.client_key", _opt_path, "", ("CONSUL_CLIENT_KEY", "STATESYNC_CONSUL_CLIENT_KEY")),
    Setting("consul.ssl", _bool, False, ("CONSUL_HTTP_SSL", "STATESYNC_CONSUL_SSL")),
    Setting("consul.ssl_verify", _bool, True, ("CONSUL_HTTP_SSL_VERIFY", "STATESYNC_CONSUL_SSL_VERIFY")),
    Setting("consul.timeout", _number(float, 0.5, 300.0), 10.0, ("STATESYNC_CONSUL_TIMEOUT",)),
    Setting("consul.txn_max_ops", _number(int, 2, 1024), 64, ("STATESYNC_CONSUL_TXN_MAX_OPS",)),
    Setting("http.bind", _str, "127.0.0.1", ("STATESYNC_HTTP_BIND",)),
    Setting("http.port", _number(int, 0, 65535), 0, ("STATESYNC_HTTP_PORT",)),
    Setting("health.max_failures", _number(int, 1, 1000), 5, ("STATESYNC_HEALTH_MAX_FAILURES",)),
    Setting("log.format", _choice(LOG_FORMATS), "auto", ("STATESYNC_LOG_FORMAT",)),
    Setting("log.level", _choice(LOG_LEVELS), "info", ("STATESYNC_LOG_LEVEL",)),
    # The satellite CA guard (see statesync/guard/satellite.py); defaults in guard/settings.GuardSettings.
    Setting("guard.trigger", _choice(gs.TRIGGERS), gs.DEFAULTS.trigger, ("STATESYNC_GUARD_TRIGGER",)),
    Setting("guard.confirmations", _number(int, 1, 20), gs.DEFAULTS.confirmations,
            ("STATESYNC_GUARD_CONFIRMATIONS",)),
    Setting("guard.confirm_interval", _number(float, 0.05, 300.0), gs.DEFAULTS.confirm_interval,
            ("STATESYNC_GUARD_CONFIRM_INTERVAL",)),
    Setting("guard.check_interval", _number(float, 0.1, 86400.0), gs.DEFAULTS.check_interval,
            ("STATESYNC_GUARD_CHECK_INTERVAL",)),
    Setting("guard.purge_window", _number(float, 0.0, 7 * 86400.0), gs.DEFAULTS.purge_window,
            ("STATESYNC_GUARD_PURGE_WINDOW",)),
    Setting("guard.clock_skew", _number(float, 0.0, 86400.0), gs.DEFAULTS.clock_skew, ("STATESYNC_GUARD_CLOCK_SKEW",)),
    Setting("guard.cert_name", _adapt(gs.parse_cert_name), "", ("STATESYNC_GUARD_CERT_NAME",)),
    Setting("guard.api_url", _adapt(gs.parse_url), "", ("STATESYNC_GUARD_API_URL",)),
    Setting("guard.api_user", _opt_path, "", ("STATESYNC_GUARD_API_USER",)),
    Setting("guard.api_password_file", _opt_path, "", ("STATESYNC_GUARD_API_PASSWORD_FILE",)),
    Setting("guard.api_cacert", _opt_path, "", ("STATESYNC_GUARD_API_CACERT",)),
    Setting("guard.pidfile", _opt_path, "", ("STATESYNC_GUARD_PIDFILE",)),
    Setting("guard.signal", _adapt(gs.parse_signal), gs.DEFAULTS.signal, ("STATESYNC_GUARD_SIGNAL",)),
    Setting("guard.docker_socket", _opt_path, gs.DEFAULTS.docker_socket, ("STATESYNC_GUARD_DOCKER_SOCKET",)),
    Setting("guard.docker_container", _adapt(gs.parse_container), "", ("STATESYNC_GUARD_DOCKER_CONTAINER",)),
    Setting("guard.command", _adapt(gs.parse_argv), (), ("STATESYNC_GUARD_COMMAND",)),
    Setting("guard.parent_host", _adapt(gs.parse_parent_host), "", ("STATESYNC_GUARD_PARENT_HOST",)),
    Setting("guard.trusted_parent_file", _opt_path, "", ("STATESYNC_GUARD_TRUSTED_PARENT_FILE",)),
    Setting("guard.trigger_timeout", _number(float, 1.0, 600.0), gs.DEFAULTS.trigger_timeout,
            ("STATESYNC_GUARD_TRIGGER_TIMEOUT",)),
    # Enrolment through Consul (statesync/enrol/, docs/ENROL.md); defaults in enrol/settings.EnrolSettings.
    Setting("enrol.enabled", _bool, es.DEFAULTS.enabled, ("STATESYNC_ENROL_ENABLED",)),
    Setting("enrol.zone", _adapt(es.parse_name), "", ("STATESYNC_ENROL_ZONE",)),
    Setting("enrol.parent_zone", _adapt(es.parse_name), es.DEFAULTS.parent_zone, ("STATESYNC_ENROL_PARENT_ZONE",)),
    Setting("enrol.host", _adapt(es.parse_host), "", ("STATESYNC_ENROL_HOST",)),
    Setting("enrol.port", _number(int, 0, 65535), 0, ("STATESYNC_ENROL_PORT",)),
    Setting("enrol.api_url", _adapt(es.parse_url), es.DEFAULTS.api_url, ("STATESYNC_ENROL_API_URL",)),
    Setting("enrol.api_user", _str, es.DEFAULTS.api_user, ("STATESYNC_ENROL_API_USER",)),
    Setting("enrol.api_password_file", _opt_path, "", ("STATESYNC_ENROL_API_PASSWORD_FILE",)),
    Setting("enrol.api_cacert", _opt_path, "", ("STATESYNC_ENROL_API_CACERT",)),
    Setting("enrol.api_server_name", _adapt(es.parse_host), "", ("STATESYNC_ENROL_API_SERVER_NAME",)),
    Setting("enrol.package", _adapt(es.parse_package), es.DEFAULTS.package, ("STATESYNC_ENROL_PACKAGE",)),
    Setting("enrol.allow", _adapt(es.parse_globs), es.DEFAULTS.allow, ("STATESYNC_ENROL_ALLOW",)),
    Setting("enrol.parent_zones", _adapt(es.parse_names), es.DEFAULTS.parent_zones, ("STATESYNC_ENROL_PARENT_ZONES",)),
    Setting("enrol.global_zones", _adapt(es.parse_names), es.DEFAULTS.global_zones, ("STATESYNC_ENROL_GLOBAL_ZONES",)),
    Setting("enrol.reserved", _adapt(es.parse_names), (), ("STATESYNC_ENROL_RESERVED",)),
    Setting("enrol.zones", _adapt(es.parse_zone_map), (), ("STATESYNC_ENROL_ZONES",)),
    Setting("enrol.interval", _number(float, 0.1, 86400.0), es.DEFAULTS.interval, ("STATESYNC_ENROL_INTERVAL",)),
    Setting("enrol.stage_timeout", _number(float, 1.0, 3600.0), es.DEFAULTS.stage_timeout,
            ("STATESYNC_ENROL_STAGE_TIMEOUT",)),
    # One writer per node (see statesync/consul/lock.py). Consul refuses TTLs below its servers'
    # session_ttl_min (10 s unless configured) and lock-delays above 60 s.
    Setting("lock.enabled", _bool, LockSettings.enabled, ("STATESYNC_LOCK_ENABLED",)),
    Setting("lock.ttl", _number(float, 1.0, 86400.0), LockSettings.ttl, ("STATESYNC_LOCK_TTL",)),
    Setting("lock.delay", _number(float, 0.0, 60.0), LockSettings.delay, ("STATESYNC_LOCK_DELAY",)),
)
_BY_NAME = {s.name: s for s in SCHEMA}
# STATESYNC_* variables that are no setting: the config file, the consul binary the demo runs,
# and the steps scripts/setup.sh takes. Any other STATESYNC_* name is a typo.
# STATESYNC_API_USER and STATESYNC_API_PASSWORD_FILE are compose/icinga-start.sh's (the master's ApiUser).
OTHER_VARIABLES = ("STATESYNC_CONFIG", "STATESYNC_CONSUL_BIN", "STATESYNC_SETUP_ONLY", "STATESYNC_API_USER",
                   "STATESYNC_API_PASSWORD_FILE")
KNOWN_VARIABLES = frozenset(OTHER_VARIABLES + tuple(v for s in SCHEMA for v in s.env if v.startswith("STATESYNC_")))


def _did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class Config:
    """The validated settings of one statesync invocation."""

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
    max_drop: float = 0.9
    on_conflict: str = "refuse"
    sealing: Sealing | None = field(default=None, repr=False)
    ready_file: Path = Path(DEFAULT_ROOT) / READY_FILE_NAME
    log_format: str = "auto"
    log_level: str = "info"
    http_bind: str = "127.0.0.1"
    http_port: int = 0
    health_max_failures: int = 5
    guard: GuardSettings = field(default_factory=GuardSettings)
    enrol: EnrolSettings = field(default_factory=EnrolSettings)
    lock: LockSettings = field(default_factory=LockSettings)
    # (name, path below root) pairs, sorted; () when the whole root is the state
    roots: tuple[tuple[str, str], ...] = ()
    keep_within: float = 0.0
    keep_hourly: int = 0
    keep_daily: int = 0
    min_interval: tuple[tuple[str, float], ...] = ()
    compression: str = "zstd"

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


def _flatten(doc: Mapping, parent: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{parent}.{key}" if parent else key
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: not UTF-8 text (byte {exc.start})") from None
    values = _flatten(doc)
    for name in values:
        if name not in _BY_NAME:
            raise ConfigError(f"{name}: unknown setting in {path}{_did_you_mean(name, _BY_NAME)}")
    return values


# Consul Enterprise's variables. An OSS server ignores ?ns= and ?partition=, so sending them proves
# nothing; ignoring them would put the state in the default namespace while the operator believes
# it is kept apart. Refused unless they name the default.
ENTERPRISE_VARIABLES = ("CONSUL_NAMESPACE", "CONSUL_PARTITION")


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    for var in sorted(env):
        if var.startswith("STATESYNC_") and var not in KNOWN_VARIABLES:
            raise ConfigError(f"unknown variable {var}{_did_you_mean(var, KNOWN_VARIABLES)}")
    for var in ENTERPRISE_VARIABLES:
        if env.get(var, "").strip() not in ("", "default"):
            raise ConfigError(f"{var}: Consul Enterprise's namespaces and partitions are not supported; statesync "
                              f"keeps its keys under prefix (STATESYNC_PREFIX) in the default one: unset {var}")
    values: dict[str, Any] = {}
    for s in SCHEMA:
        for var in s.env:  # later variables (STATESYNC_*) win
            if env.get(var, "") != "":
                values[s.name] = env[var]
    return values


def _read_secret(path: str, setting: str) -> str:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:  # the position only: the bytes are secret
        raise ConfigError(f"{setting}: {path} is not UTF-8 text (byte {exc.start})") from None


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
         config_file: str | None = None) -> Config:
    """Merge defaults, file, environment and flags into a Config.

    ``flags`` maps setting names (``consul.addr``) to values given on the command line;
    None values are ignored. Raises ConfigError naming the first bad setting.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = config_file or env.get("STATESYNC_CONFIG") or None
    raw: dict[str, Any] = {s.name: s.default for s in SCHEMA}
    given = {**(_read_file(config_file) if config_file else {}), **_from_env(env), **flags}
    raw.update(given)
    values: dict[str, Any] = {}
    for s in SCHEMA:
        v = raw[s.name]
        if v is None:
            values[s.name] = None
            continue
        try:
            values[s.name] = s.parse(v)
        except _Invalid as exc:
            raise ConfigError(f"{s.name}: {exc}") from None
    if "encrypt" not in given:
        values["encrypt"] = default_encrypt(values["roots"])
    return _build(values)


def default_encrypt(roots: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The secrets encrypted by default, relative to root: DEFAULT_ENCRYPT below the state
    subtree, and CONFIG_SECRETS below the config subtree when there is one."""
    named = dict(roots)
    return rebase(named.get("state", ""), DEFAULT_ENCRYPT) + (
        rebase(named["config"], CONFIG_SECRETS) if "config" in named else ())


def _sealer(v: dict[str, Any]) -> Sealer | None:
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


def _build(v: dict[str, Any]) -> Config:
    if v["max_wait"] < v["debounce"]:
        raise ConfigError(f"max_wait: must be at least debounce ({v['debounce']:g}), got {v['max_wait']:g}")
    if v["lock.enabled"] and v["chunk_size"] > FENCED_VALUE_MAX:
        # Fenced writes travel inside transactions, whose body Consul caps at 512 KiB.
        raise ConfigError(f"chunk_size: at most {FENCED_VALUE_MAX} while lock.enabled is on, got {v['chunk_size']}")
    node = v["node"] or socket.gethostname().split(".")[0]
    if not valid_node(node):
        raise ConfigError(f"node: host name {node!r} is not a usable node name; set node explicitly")
    token, token_from = v["consul.token"], "consul.token"
    if v["consul.token_file"]:
        token, token_from = _read_secret(v["consul.token_file"], "consul.token_file"), "consul.token_file"
    if not all(" " < c < "\x7f" for c in token):
        # It travels in an HTTP header, where such characters fail far from here, or worse.
        raise ConfigError(f"{token_from}: the token holds spaces, control or non-ASCII characters")
    auth, auth_from = v["consul.auth"], "consul.auth"
    if v["consul.auth_file"]:
        auth, auth_from = _read_secret(v["consul.auth_file"], "consul.auth_file"), "consul.auth_file"
    if not all(c >= " " and c != "\x7f" for c in auth):
        raise ConfigError(f"{auth_from}: holds control characters; expected user:password on one line")
    for name in ("consul.cacert", "consul.client_cert", "consul.client_key"):
        if v[name] and not os.path.isfile(v[name]):
            raise ConfigError(f"{name}: file {v[name]} does not exist")
    if v["consul.capath"] and not os.path.isdir(v["consul.capath"]):
        raise ConfigError(f"consul.capath: directory {v['consul.capath']} does not exist")
    if bool(v["consul.client_cert"]) != bool(v["consul.client_key"]):
        raise ConfigError("consul.client_key: a client certificate needs its key and the other way round")
    default_scheme = "https" if v["consul.ssl"] else "http"
    endpoints = tuple(parse_addr(a, default_scheme) for a in v["consul.addr"])
    consul = ConsulSettings(endpoints=endpoints, token=token, auth=auth, cacert=v["consul.cacert"], capath=v["consul.capath"],
                            tls_server_name=v["consul.tls_server_name"],
                            client_cert=v["consul.client_cert"], client_key=v["consul.client_key"],
                            verify=v["consul.ssl_verify"], timeout=v["consul.timeout"],
                            txn_max_ops=v["consul.txn_max_ops"])
    sealing = Sealing(_sealer(v), node, v["encrypt"], v["encrypt_all"], v["allow_plaintext_secrets"])
    # Resolved once, here, for every command: docs/FORMAT.md, "Several roots", says the rule.
    root = resolve_roots(Path(v["root"]).absolute(), v["roots"])
    state = dict(v["roots"]).get("state", "")
    excludes = (rebase(state, DEFAULT_EXCLUDES) if v["default_excludes"] else ()) + v["exclude"]
    ready_file = Path(v["ready_file"]).absolute() if v["ready_file"] else root / READY_FILE_NAME
    return Config(root=root, on_conflict=v["on_conflict"], sealing=sealing, ready_file=ready_file, prefix=v["prefix"], node=node, role=v["role"],
                  path_filter=PathFilter(v["include"], excludes, tuple(p for _, p in v["roots"])), keep=v["keep"],
                  chunk_size=v["chunk_size"], debounce=v["debounce"], max_wait=v["max_wait"],
                  full_scan_interval=v["full_scan_interval"], gc_interval=v["gc_interval"],
                  gc_grace=v["gc_grace"], max_drop=v["max_drop"], consul=consul, log_format=v["log.format"],
                  http_bind=v["http.bind"], http_port=v["http.port"], health_max_failures=v["health.max_failures"],
                  log_level=v["log.level"], guard=gs.build(v), enrol=es.build(v, v["role"]),
                  lock=LockSettings(v["lock.enabled"], v["lock.ttl"], v["lock.delay"]), roots=v["roots"],
                  keep_within=v["keep_within"], keep_hourly=v["keep_hourly"], keep_daily=v["keep_daily"],
                  min_interval=v["min_interval"], compression=v["compression"])
