"""The command layer: parse arguments, load the config, call one action, map errors to exit codes."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import structlog

from . import __version__, config, logs
from .errors import EXIT_FAILURE, EXIT_OK, StatesyncError, exit_code_for
from .repo import Repo
from .store import Store

log = structlog.get_logger(__name__)

# flag destination -> setting name; every flag also has an environment variable (see config.SCHEMA)
_FLAG_SETTINGS = {
    "root": "root", "prefix": "prefix", "node": "node", "role": "role", "include": "include",
    "exclude": "exclude", "keep": "keep", "chunk_size": "chunk_size", "debounce": "debounce",
    "consul_addr": "consul.addr", "consul_token_file": "consul.token_file",
    "consul_cacert": "consul.cacert", "consul_client_cert": "consul.client_cert",
    "consul_client_key": "consul.client_key", "log_format": "log.format", "log_level": "log.level",
}


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common settings (also STATESYNC_* variables and the config file)")
    g.add_argument("--config", help="TOML config file (env STATESYNC_CONFIG)")
    g.add_argument("--root", help="Icinga 2 state directory (default /var/lib/icinga2)")
    g.add_argument("--prefix", help="Consul KV prefix (default statesync/icinga2)")
    g.add_argument("--node", help="node name in KV (default: the host name)")
    g.add_argument("--include", action="append", metavar="GLOB", help="include pattern (repeatable)")
    g.add_argument("--exclude", action="append", metavar="GLOB", help="exclude pattern (repeatable; replaces the defaults)")
    g.add_argument("--keep", help="snapshots kept per node (default 10)")
    g.add_argument("--chunk-size", dest="chunk_size", help="chunk size in bytes (default 262144)")
    g.add_argument("--consul-addr", dest="consul_addr", action="append", metavar="ADDR",
                   help="Consul HTTP address, repeatable (env CONSUL_HTTP_ADDR)")
    g.add_argument("--consul-token-file", dest="consul_token_file", metavar="FILE",
                   help="file holding the ACL token (env CONSUL_HTTP_TOKEN_FILE)")
    g.add_argument("--consul-cacert", dest="consul_cacert", metavar="FILE", help="CA for Consul's TLS (env CONSUL_CACERT)")
    g.add_argument("--consul-client-cert", dest="consul_client_cert", metavar="FILE", help="client certificate (env CONSUL_CLIENT_CERT)")
    g.add_argument("--consul-client-key", dest="consul_client_key", metavar="FILE", help="client key (env CONSUL_CLIENT_KEY)")
    g.add_argument("--log-format", dest="log_format", help="auto, json or console")
    g.add_argument("--log-level", dest="log_level", help="debug, info, warning or error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statesync", description="Keep Icinga 2 state in Consul KV.")
    parser.add_argument("--version", action="version", version=f"statesync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backup", help="snapshot --root once and commit it")
    _common(p)

    p = sub.add_parser("restore", help="restore a snapshot into an empty --root")
    _common(p)
    p.add_argument("--snapshot", metavar="ID", help="snapshot id (default: the node's latest)")

    p = sub.add_parser("snapshots", help="list a node's snapshots")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = sub.add_parser("run", help="run the sidecar daemon")
    _common(p)
    p.add_argument("--role", help="master or satellite (env STATESYNC_ROLE)")
    p.add_argument("--debounce", help="seconds of quiet before a burst is committed (default 0.5)")
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {setting: getattr(args, dest) for dest, setting in _FLAG_SETTINGS.items() if hasattr(args, dest)}


def _repo(cfg: config.Config) -> Repo:
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)


def cmd_backup(cfg: config.Config, args: argparse.Namespace) -> int:
    from .scan import Scanner
    if not cfg.root.is_dir():
        raise StatesyncError(f"root: {cfg.root} is not a directory")
    repo = _repo(cfg)
    head = repo.head()
    known = set(repo.refs(head.record)) if head.record else set()
    scan = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size).scan(known)
    res = repo.commit(scan, head, known, meta={"command": "backup"})
    if res is None:
        print(f"unchanged: snapshot {head.record.id} already holds this tree")
        return EXIT_OK
    r = res.record
    print(f"snapshot {r.id}: {r.files} files, {r.bytes} bytes, {res.chunks_written} chunks written, "
          f"{res.chunks_reused} reused, {res.kv_writes} KV writes, {res.seconds:.2f}s")
    return EXIT_OK


def cmd_restore(cfg: config.Config, args: argparse.Namespace) -> int:
    from .restore import restore
    repo = _repo(cfg)
    record = repo.record(args.snapshot)
    res = restore(repo, record, cfg.root)
    print(f"restored snapshot {record.id} of node {cfg.node}: {res.files} files, {res.bytes} bytes into {cfg.root}")
    return EXIT_OK


def cmd_snapshots(cfg: config.Config, args: argparse.Namespace) -> int:
    records = _repo(cfg).records()
    if args.json:
        print(json.dumps([r.summary() for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"no snapshots for node {cfg.node} under {cfg.prefix}")
        return EXIT_OK
    print(f"{'ID':<32} {'CREATED':<30} {'FILES':>7} {'BYTES':>12}")
    for r in records:
        print(f"{r.id:<32} {r.created:<30} {r.files:>7} {r.bytes:>12}")
    return EXIT_OK


def cmd_run(cfg: config.Config, args: argparse.Namespace) -> int:
    from .daemon import Daemon
    daemon = Daemon(cfg, _repo(cfg))
    daemon.install_signal_handlers()
    daemon.run()
    return EXIT_OK


COMMANDS = {"backup": cmd_backup, "restore": cmd_restore, "snapshots": cmd_snapshots, "run": cmd_run}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statesync`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        cfg = config.load(_flags(args), config_file=args.config)
        logs.configure(cfg.log_format, cfg.log_level, sys.stdout if args.command == "run" else sys.stderr)
        return COMMANDS[args.command](cfg, args)
    except StatesyncError as exc:
        print(f"statesync: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("statesync: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
