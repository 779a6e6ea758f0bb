"""Every setting, declared once: ``SCHEMA`` gives each its name, parser, default and variables.

``config`` reads the sources against it; the settings types of the guard and of enrolment
are dataclasses whose fields take their defaults from it, and ``config`` fills them by name.
A base module: it imports no package that imports ``config``, so the import graph has no circle.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from . import parsing_icinga as pi
from .consul.settings import LockSettings
from .disk import CA_KEY, CERTS_DIR, READY_FILE
from .parsing import (
    _adapt,
    _addrs,
    _bool,
    _choice,
    _duration,
    _min_intervals,
    _node,
    _number,
    _opt_path,
    _path,
    _patterns,
    _prefix,
    _roots,
    _server_name,
    _str,
)
from .snapshot.chunking import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

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
DEFAULT_ENCRYPT = (CA_KEY, f"{CERTS_DIR}/*.key")
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
READY_FILE_NAME = READY_FILE
LOG_FORMATS = ("auto", "json", "console")
COMPRESSION = ("zstd", "zlib", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
TRIGGERS = ("api", "signal", "docker", "command", "exit")


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
    Setting("chunk_size", _number(int, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), DEFAULT_CHUNK_SIZE, ("STATESYNC_CHUNK_SIZE",)),
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
    # The satellite CA guard (see statesync/guard/ca_watch.py).
    Setting("guard.trigger", _choice(TRIGGERS), "exit", ("STATESYNC_GUARD_TRIGGER",)),
    Setting("guard.confirmations", _number(int, 1, 20), 2, ("STATESYNC_GUARD_CONFIRMATIONS",)),
    Setting("guard.confirm_interval", _number(float, 0.05, 300.0), 2.0, ("STATESYNC_GUARD_CONFIRM_INTERVAL",)),
    Setting("guard.check_interval", _number(float, 0.1, 86400.0), 60.0, ("STATESYNC_GUARD_CHECK_INTERVAL",)),
    Setting("guard.purge_window", _number(float, 0.0, 7 * 86400.0), 600.0, ("STATESYNC_GUARD_PURGE_WINDOW",)),
    Setting("guard.clock_skew", _number(float, 0.0, 86400.0), 300.0, ("STATESYNC_GUARD_CLOCK_SKEW",)),
    Setting("guard.cert_name", _adapt(pi.parse_cert_name), "", ("STATESYNC_GUARD_CERT_NAME",)),
    Setting("guard.api_url", _adapt(pi.parse_http_url), "", ("STATESYNC_GUARD_API_URL",)),
    Setting("guard.api_user", _opt_path, "", ("STATESYNC_GUARD_API_USER",)),
    Setting("guard.api_password_file", _opt_path, "", ("STATESYNC_GUARD_API_PASSWORD_FILE",)),
    Setting("guard.api_cacert", _opt_path, "", ("STATESYNC_GUARD_API_CACERT",)),
    Setting("guard.pidfile", _opt_path, "", ("STATESYNC_GUARD_PIDFILE",)),
    Setting("guard.signal", _adapt(pi.parse_signal), "SIGTERM", ("STATESYNC_GUARD_SIGNAL",)),
    Setting("guard.docker_socket", _opt_path, "/var/run/docker.sock", ("STATESYNC_GUARD_DOCKER_SOCKET",)),
    Setting("guard.docker_container", _adapt(pi.parse_container), "", ("STATESYNC_GUARD_DOCKER_CONTAINER",)),
    Setting("guard.command", _adapt(pi.parse_argv), (), ("STATESYNC_GUARD_COMMAND",)),
    # The parent endpoint whose TLS certificate the guard fetches, checks against the published
    # CA and writes to trusted_parent_file, for the next enrolment to pin (host:port).
    Setting("guard.parent_host", _adapt(pi.parse_parent_host), "", ("STATESYNC_GUARD_PARENT_HOST",)),
    Setting("guard.trusted_parent_file", _opt_path, "", ("STATESYNC_GUARD_TRUSTED_PARENT_FILE",)),
    Setting("guard.trigger_timeout", _number(float, 1.0, 600.0), 30.0, ("STATESYNC_GUARD_TRIGGER_TIMEOUT",)),
    # Enrolment through Consul (statesync/enrol/, docs/ENROL.md).
    Setting("enrol.enabled", _bool, False, ("STATESYNC_ENROL_ENABLED",)),
    Setting("enrol.zone", _adapt(pi.parse_name), "", ("STATESYNC_ENROL_ZONE",)),
    Setting("enrol.parent_zone", _adapt(pi.parse_name), "master", ("STATESYNC_ENROL_PARENT_ZONE",)),
    Setting("enrol.host", _adapt(pi.parse_host), "", ("STATESYNC_ENROL_HOST",)),
    Setting("enrol.port", _number(int, 0, 65535), 0, ("STATESYNC_ENROL_PORT",)),
    Setting("enrol.api_url", _adapt(pi.parse_https_url), "https://127.0.0.1:5665", ("STATESYNC_ENROL_API_URL",)),
    Setting("enrol.api_user", _str, "statesync", ("STATESYNC_ENROL_API_USER",)),
    Setting("enrol.api_password_file", _opt_path, "", ("STATESYNC_ENROL_API_PASSWORD_FILE",)),
    Setting("enrol.api_cacert", _opt_path, "", ("STATESYNC_ENROL_API_CACERT",)),
    Setting("enrol.api_server_name", _adapt(pi.parse_host), "", ("STATESYNC_ENROL_API_SERVER_NAME",)),
    Setting("enrol.package", _adapt(pi.parse_package), "statesync-satellites", ("STATESYNC_ENROL_PACKAGE",)),
    Setting("enrol.allow", _adapt(pi.parse_globs), ("*",), ("STATESYNC_ENROL_ALLOW",)),
    Setting("enrol.parent_zones", _adapt(pi.parse_names), ("master",), ("STATESYNC_ENROL_PARENT_ZONES",)),
    Setting("enrol.global_zones", _adapt(pi.parse_names), ("global-templates", "director-global"),
            ("STATESYNC_ENROL_GLOBAL_ZONES",)),
    Setting("enrol.reserved", _adapt(pi.parse_names), (), ("STATESYNC_ENROL_RESERVED",)),
    Setting("enrol.zones", _adapt(pi.parse_zone_map), (), ("STATESYNC_ENROL_ZONES",)),
    Setting("enrol.interval", _number(float, 0.1, 86400.0), 30.0, ("STATESYNC_ENROL_INTERVAL",)),
    Setting("enrol.stage_timeout", _number(float, 1.0, 3600.0), 60.0, ("STATESYNC_ENROL_STAGE_TIMEOUT",)),
    # One writer per node (see statesync/consul/lock.py). Consul refuses TTLs below its servers'
    # session_ttl_min (10 s unless configured) and lock-delays above 60 s.
    Setting("lock.enabled", _bool, LockSettings.enabled, ("STATESYNC_LOCK_ENABLED",)),
    Setting("lock.ttl", _number(float, 1.0, 86400.0), LockSettings.ttl, ("STATESYNC_LOCK_TTL",)),
    Setting("lock.delay", _number(float, 0.0, 60.0), LockSettings.delay, ("STATESYNC_LOCK_DELAY",)),
)
BY_NAME = {s.name: s for s in SCHEMA}


def section(prefix: str) -> Callable[[type], type]:
    """Make the class a frozen dataclass of the settings named ``prefix.*``: each field named after
    one takes its default (and, for a secret, its hiding from repr) from SCHEMA. A field no setting
    names brings its own default (a value derived from others); a setting without a field is a
    TypeError at import, so neither can be forgotten."""
    def make(cls: type) -> type:
        own = {s.name[len(prefix) + 1:]: s for s in SCHEMA if s.name.startswith(prefix + ".")}
        missing = sorted(set(own) - set(cls.__annotations__))
        if missing:
            raise TypeError(f"{cls.__name__} lacks a field for {', '.join(f'{prefix}.{m}' for m in missing)}")
        for name, s in own.items():
            if name in vars(cls):
                raise TypeError(f"{cls.__name__}.{name}: its default is SCHEMA's ({prefix}.{name})")
            setattr(cls, name, field(default=s.default, repr=not s.secret))
        return dataclass(frozen=True)(cls)
    return make


def fill(cls: type, values: Mapping[str, Any], prefix: str = "", **derived: Any) -> Any:
    """An instance of the dataclass ``cls``, each field from the parsed setting of its name (below
    ``prefix``; without one, ``log_format`` is ``log.format``) unless ``derived`` gives it. A field
    that is neither keeps its own default (``ConsulSettings.txn_max_body``)."""
    kwargs = {}
    for f in fields(cls):
        name = f"{prefix}.{f.name}" if prefix else f.name if f.name in BY_NAME else f.name.replace("_", ".", 1)
        if f.name in derived:
            kwargs[f.name] = derived.pop(f.name)
        elif name in BY_NAME or f.default is MISSING:
            kwargs[f.name] = values[name]
    if derived:
        raise TypeError(f"{cls.__name__} has no field {', '.join(derived)}")
    return cls(**kwargs)


@section("guard")
class GuardSettings:
    """How the satellite CA guard checks and what it fires. ``api_password`` is never shown."""

    trigger: str
    confirmations: int
    confirm_interval: float
    check_interval: float
    purge_window: float
    clock_skew: float
    cert_name: str
    api_url: str
    api_user: str
    api_password_file: str
    api_cacert: str
    pidfile: str
    signal: str
    docker_socket: str
    docker_container: str
    command: tuple[str, ...]
    trigger_timeout: float
    parent_host: str
    trusted_parent_file: str
    api_password: str = field(default="", repr=False)  # read from api_password_file


@section("enrol")
class EnrolSettings:
    """How a satellite registers and how the master accepts. ``api_password`` is never shown."""

    enabled: bool
    # satellite side: what the registration asks for
    zone: str  # "" = the certificate name
    parent_zone: str
    host: str
    port: int
    # master side: Icinga 2's API, and what may be accepted
    api_url: str
    api_user: str
    api_password_file: str
    api_cacert: str  # "" = the master's own ca/ca.crt
    api_server_name: str  # "" = the host of api_url
    package: str
    allow: tuple[str, ...]
    parent_zones: tuple[str, ...]
    global_zones: tuple[str, ...]
    reserved: tuple[str, ...]
    # (CN glob, zone) pairs that authorise a zone other than the CN's own (docs/ENROL.md)
    zones: tuple[tuple[str, str], ...]
    interval: float
    stage_timeout: float
    api_password: str = field(default="", repr=False)  # read from api_password_file
