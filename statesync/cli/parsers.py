"""The command line: one parser per command, built from parent parsers grouped by concern.

Each command takes the flags it uses and no others, so ``statesync restore --help`` shows
what restore reads. Every setting flag has an environment variable and a config-file key as
well (``config.SCHEMA``); a flag, when given, wins over both.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from .. import __version__
from ..errors import EXIT_USAGE
from ..snapshot.layout import SNAPSHOT_ID_RE

# flag destination -> setting name
_FLAG_SETTINGS = {
    "root": "root", "prefix": "prefix", "node": "node", "role": "role", "include": "include",
    "exclude": "exclude", "default_excludes": "default_excludes", "keep": "keep", "on_conflict": "on_conflict", "chunk_size": "chunk_size", "debounce": "debounce",
    "consul_addr": "consul.addr", "consul_token_file": "consul.token_file",
    "consul_cacert": "consul.cacert", "consul_client_cert": "consul.client_cert",
    "consul_client_key": "consul.client_key", "log_format": "log.format", "log_level": "log.level",
    "allow_plaintext_secrets": "allow_plaintext_secrets",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error is; the usage itself is one --help away."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"statesync: error: {message} (see {self.prog} --help)\n")


def _gid(text: str) -> int:
    if not text.isdigit() or int(text) > 2**31 - 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a numeric group id")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    # nan compares false with everything: a wait for it would never end.
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}")
    return value


def _snapshot_id(text: str) -> str:
    # It becomes part of a KV key: '../' in it would name another key.
    if not SNAPSHOT_ID_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a snapshot id (statesync snapshots lists them)")
    return text


def _parent(title: str) -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(add_help=False)
    return parser, parser.add_argument_group(title)


def _config_flags() -> argparse.ArgumentParser:
    p, g = _parent("configuration")
    g.add_argument("--config", help="TOML config file (env STATESYNC_CONFIG)")
    return p


def _consul_flags() -> argparse.ArgumentParser:
    p, g = _parent("Consul connection (env CONSUL_HTTP_*, as Consul's own CLI)")
    g.add_argument("--consul-addr", dest="consul_addr", action="append", metavar="ADDR",
                   help="Consul HTTP address, repeatable (env CONSUL_HTTP_ADDR)")
    g.add_argument("--consul-token-file", dest="consul_token_file", metavar="FILE",
                   help="file holding the ACL token (env CONSUL_HTTP_TOKEN_FILE)")
    g.add_argument("--consul-cacert", dest="consul_cacert", metavar="FILE", help="CA for Consul's TLS (env CONSUL_CACERT)")
    g.add_argument("--consul-client-cert", dest="consul_client_cert", metavar="FILE",
                   help="client certificate (env CONSUL_CLIENT_CERT)")
    g.add_argument("--consul-client-key", dest="consul_client_key", metavar="FILE", help="client key (env CONSUL_CLIENT_KEY)")
    return p


def _node_flags() -> argparse.ArgumentParser:
    p, g = _parent("which node's snapshots")
    g.add_argument("--prefix", help="Consul KV prefix (default statesync/icinga2)")
    g.add_argument("--node", help="node name in KV (default: the host name)")
    return p


def _root_flags() -> argparse.ArgumentParser:
    p, g = _parent("local state")
    g.add_argument("--root", help="Icinga 2 state directory (default /var/lib/icinga2)")
    return p


def _tree_flags(include: str = "include pattern (repeatable)", metavar: str = "GLOB",
                dest: str = "include") -> argparse.ArgumentParser:
    p, g = _parent("what a snapshot holds")
    g.add_argument("--include", dest=dest, action="append", metavar=metavar, help=include)
    g.add_argument("--exclude", action="append", metavar="GLOB",
                   help="exclude pattern (repeatable; added to the default excludes)")
    g.add_argument("--no-default-excludes", dest="default_excludes", action="store_const", const=False,
                   help="drop the default excludes (api/log/, api/zones-stage/, *.tmp, *.swp, *~)")
    return p


def _write_flags() -> argparse.ArgumentParser:
    p, g = _parent("how snapshots are written and kept")
    g.add_argument("--chunk-size", dest="chunk_size", help="chunk size in bytes (default 360448)")
    g.add_argument("--keep", help="snapshots kept per node (default 10)")
    return p


def _secrets_flags() -> argparse.ArgumentParser:
    p, g = _parent("private keys")
    g.add_argument("--allow-plaintext-secrets", dest="allow_plaintext_secrets", action="store_const", const=True,
                   help="store private keys in Consul unencrypted when no encryption key is configured "
                        "(refused without it; env STATESYNC_ALLOW_PLAINTEXT_SECRETS)")
    return p


def _log_flags() -> argparse.ArgumentParser:
    p, g = _parent("logging")
    g.add_argument("--log-format", dest="log_format", help="auto, json or console")
    g.add_argument("--log-level", dest="log_level", help="debug, info, warning or error")
    return p


def build_parser() -> argparse.ArgumentParser:
    cfg, consul, node, root, tree, write, logs = (_config_flags(), _consul_flags(), _node_flags(), _root_flags(),
                                                  _tree_flags(), _write_flags(), _log_flags())
    parser = _Parser(prog="statesync", description="Keep Icinga 2 state in Consul KV.")
    parser.add_argument("--version", action="version", version=f"statesync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[*parents, logs])

    secrets = _secrets_flags()
    p = command("backup", "snapshot --root once and commit it", cfg, consul, node, root, tree, write, secrets)
    p.add_argument("--allow-drop", dest="allow_drop", action="store_true",
                   help="commit even when the tree lost more than max_drop of its files or bytes (a deliberate "
                        "large deletion; without it such a commit is refused as a likely wiped volume)")

    part = _tree_flags("with --target: restore only this path of the snapshot (relative to its root; a directory "
                       "brings everything below it; repeatable)", "PATH", "paths")  # paths, not the include setting
    p = command("restore", "restore a snapshot into --root (the disaster command)", cfg, consul, node, root, part)
    p.add_argument("--snapshot", metavar="ID", type=_snapshot_id, help="snapshot id (default: the node's latest)")
    p.add_argument("--force", action="store_true",
                   help="restore over a non-empty root, moving its content into .statesync-aside/<time>/ first")
    p.add_argument("--if-empty", dest="if_empty", action="store_true",
                   help="restore only when root holds no Icinga 2 state (no ca/, no certs/); else do nothing")
    p.add_argument("--fresh", action="store_true",
                   help="with --if-empty: this node is new, so go on without a snapshot even when other nodes "
                        "have snapshots or a CA is published (without it that is refused as a likely typo)")
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print what restore would change in --root and write nothing: add (in the snapshot, not "
                        "in --root), change (content), meta (mode, owner, mtime only), remove (in --root only), "
                        "and what --force would move aside; exit 0 nothing would change, 1 something would, "
                        "2 trouble")
    p.add_argument("--target", metavar="DIR",
                   help="with --include: write the included paths into DIR (created if missing; must be empty "
                        "or absent unless --force, which moves its content aside), never into --root unless DIR "
                        "is --root")

    p = command("diff", "compare --root with a snapshot (default the node's latest), as diff SNAPSHOT ROOT: added "
                        "= in --root, not in the snapshot; removed = in the snapshot, not in --root; changed = "
                        "other type or content; metadata = only mode, owner or mtime differ (exit 0 identical, "
                        "1 different, 2 trouble)", cfg, consul, node, root, tree)
    p.add_argument("--snapshot", metavar="ID", type=_snapshot_id, help="snapshot id (default: the node's latest)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts: {snapshot, root, identical, "
                                                       "added, changed, removed, metadata}")

    p = command("ready", "readiness probe: exit 0 once the start-up restore has finished", cfg, root)
    p.add_argument("--wait", type=_seconds, default=0.0, metavar="SECONDS", help="wait up to this long (default: no wait)")

    p = command("health", "health probe of a running sidecar (a container's HEALTHCHECK): asks its /healthz "
                          "on the configured http.bind and http.port", cfg)
    p.add_argument("--ready", action="store_true", help="ask /readyz instead: restored and Consul reachable")
    p.add_argument("--timeout", type=_seconds, default=3.0, metavar="SECONDS", help="give up after this long (default 3)")

    p = command("pin-parent", "before a satellite's first enrolment: fetch the parent's certificate, check it "
                              "against the CA published in Consul and write it to guard.trusted_parent_file "
                              "(nothing to do on an enrolled node)", cfg, consul, root)
    p.add_argument("--wait", type=_seconds, default=300.0, metavar="SECONDS",
                   help="keep trying this long for a parent that is still starting (default 300)")

    p = command("enrol", "register this satellite's pending certificate request in Consul, for the master to "
                         "accept and sign (exit 0 registered or enrolled, 1 not possible)", cfg, consul, node, root)
    p.add_argument("--wait", type=_seconds, nargs="?", const=300.0, default=None, metavar="SECONDS",
                   help="then wait until the certificate is signed by the published CA (default 300 s)")

    p = command("satellites", "list the satellites registered for enrolment and their state (registered, "
                              "accepted, signed, connected, rejected)", cfg, consul, node, root)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    command("demo", "show the whole story on a throwaway Consul dev agent")

    p = command("keygen", "write a new encryption key to a file (mode 0600)", cfg)
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the key; never overwritten; - prints it to stdout")
    p.add_argument("--group", type=_gid, metavar="GID",
                   help="make the key readable by this group too (mode 0640, owner root): the uid 5665 of the "
                        "containers reads a compose file secret with the owner and mode it has on the host")

    p = command("rekey", "re-encrypt the node's kept snapshots under a new key", cfg, consul, node)
    p.add_argument("--new-key-file", dest="new_key_file", required=True, metavar="FILE",
                   help="the new key (from statesync keygen); the current one comes from encryption_key_file")

    p = command("snapshots", "list a node's snapshots", cfg, consul, node)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = command("verify", "fetch and check every chunk a snapshot needs (checksum, decryption, decompression) and "
                          "write nothing; lists each damaged path (exit 0 whole, 1 damaged)", cfg, consul, node)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", metavar="ID", type=_snapshot_id, help="snapshot id (default: the node's latest)")
    which.add_argument("--all", action="store_true", help="every kept snapshot (each distinct chunk fetched once)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts (docs/JSON.md)")

    p = command("ls", "list the tree inside a snapshot: type and mode, owner, size, mtime, path", cfg, consul, node)
    p.add_argument("--snapshot", metavar="ID", type=_snapshot_id, help="snapshot id (default: the node's latest)")
    p.add_argument("path", metavar="PATH", nargs="?", help="only this file or subtree (relative to the snapshot's root)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts (docs/JSON.md)")

    p = command("nodes", "list every node under the prefix: role, head time, files, size and the CA fingerprint "
                         "its head holds (how to find a rebuilt master's old node name)", cfg, consul, node)
    p.add_argument("--json", action="store_true", help="print JSON for scripts (docs/JSON.md)")

    for name, what in (("pin", "pin a snapshot: no retention rule ever removes it"),
                       ("unpin", "unpin a snapshot: the retention rules decide about it again")):
        p = command(name, what, cfg, consul, node)
        p.add_argument("snapshot", metavar="SNAPSHOT", type=_snapshot_id, help="snapshot id (statesync snapshots)")

    p = command("forget", "remove the snapshot records the retention rules (keep, keep_within, keep_hourly, "
                          "keep_daily, CA identities, pins, head) do not keep", cfg, consul, node, write)
    p.add_argument("--dry-run", dest="dry_run", action="store_true",
                   help="print each snapshot with the reasons it is kept or that it would go; remove nothing")

    command("gc", "collect now the chunks no kept snapshot references (unreferenced beyond gc_grace), as the "
                  "sidecar does; takes the node's writer lock, refused while a sidecar holds it", cfg, consul, node)

    p = command("run", "run the sidecar daemon", cfg, consul, node, root, tree, write, secrets)
    p.add_argument("--role", help="master or satellite, required (env STATESYNC_ROLE)")
    p.add_argument("--on-conflict", dest="on_conflict",
                   help="master's CA differs from the published one: refuse (default), keep-local or restore; "
                        "for a one-time change use accept-ca")
    p.add_argument("--debounce", help="seconds of quiet before a burst is committed (default 0.5)")

    p = command("check-ca", "compare the local CA with the published one (exit 0 match, 1 mismatch, 2 cannot tell)",
                cfg, consul, node, root)
    p.add_argument("--json", action="store_true", help="print JSON for scripts (docs/JSON.md)")

    p = command("accept-ca", "publish the master's local ca/ca.crt for the whole fleet once, as a recorded decision",
                cfg, consul, node, root)
    p.add_argument("--reason", required=True, metavar="TEXT", help="why the fleet's CA changes (recorded)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (needed when not on a terminal)")
    return parser


def setting_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gave, by setting name (None where a flag was not given)."""
    return {setting: getattr(args, dest) for dest, setting in _FLAG_SETTINGS.items() if hasattr(args, dest)}
