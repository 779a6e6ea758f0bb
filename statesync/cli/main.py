"""The command layer: parse arguments, load the config, call one action, map errors to exit codes."""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from typing import Sequence

import structlog

from .. import config
from ..consul.store import retry
from ..disk import CA_CERT
from ..errors import EXIT_FAILURE, EXIT_OK, NotFound, StatesyncError, UnreadablePath, UsageError, exit_code_for
from ..repo.repository import Repo
from ..sidecar import logs
from ..sidecar.wiring import open_repo
from ..snapshot.names import escape, exact, one_line
from .compare import cmd_diff, print_dry_run, restore_part
from .enrol import cmd_enrol, cmd_satellites
from .inspect import cmd_ls, cmd_nodes, cmd_verify
from .ops import cmd_health, cmd_keygen, cmd_pin_parent
from .parsers import build_parser, setting_flags
from .progress import Progress
from .retention import cmd_forget, cmd_gc, cmd_pin, cmd_unpin, snapshot_rows

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def _reading(root):
    """Name the file that could not be read below ``root``, in one line."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise
        raise UnreadablePath.from_os_error(exc, root) from None


@contextlib.contextmanager
def _aborting(bar: Progress):
    """End ``bar`` without its summary when the block fails: the error line comes next."""
    try:
        yield
    except BaseException:
        bar.abort()
        raise


def cmd_backup(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..repo import backup
    from ..restore.apply import recover
    from ..restore.rootlock import hold_root
    from ..tree.scan import Scanner
    # What backup reports as its time: the whole of it. The commit's own time (CommitResult.seconds)
    # leaves out the scan and the upload that overlaps it, most of a backup.
    started = time.monotonic()
    if not cfg.root.is_dir():
        raise StatesyncError(f"root: {cfg.root} is not a directory")
    with hold_root(cfg.root, "backup"):
        recover(cfg.root)  # never snapshot a tree that a killed restore left half swapped
        repo = open_repo(cfg)
        head = retry(repo.checked_head)  # each failed attempt is a warning on stderr, none is silent
        known = set(repo.refs(head.record)) if head.record else set()
        # The last snapshot's size is the estimate of this one's (none: counts and rate, no ETA).
        bar = Progress(sys.stderr, head.record.files if head.record else 0, head.record.bytes if head.record else 0,
                       "backup", started=started)
        # A file that keeps changing while read keeps its version from the head (stderr says so).
        previous = (lambda: repo.manifest(head.record)) if head.record else None
        scanner = Scanner(cfg.root, cfg.path_filter, cfg.chunk_size, cfg.sealing, previous=previous,
                          compression=cfg.compression)
        with _aborting(bar), _reading(cfg.root):
            res = backup.run(repo, scanner, head, known, roots=cfg.roots, root=cfg.root, meta={"command": "backup"},
                             max_drop=1.0 if args.allow_drop else cfg.max_drop, progress=bar.file_done).commit
    bar.close()
    if res is None:
        print(f"unchanged: snapshot {escape(head.record.id)} already holds this tree")
        return EXIT_OK
    r = res.record
    print(f"snapshot {r.id}: {r.files} files, {r.bytes} bytes, {res.chunks_written} chunks written, "
          f"{res.chunks_reused} reused, {res.kv_writes} KV writes, {bar.elapsed:.2f}s")
    return EXIT_OK


def cmd_restore(cfg: config.Config, args: argparse.Namespace) -> int:
    import contextlib

    from ..restore import apply as rs
    from ..restore.rootlock import hold_root
    from ..restore.startup import StartOutcome, at_startup, mark_ready
    if args.fresh and not args.if_empty:
        raise UsageError("--fresh: only with --if-empty (a plain restore never starts afresh)")
    if args.paths or args.target is not None:
        return restore_part(cfg, args)
    # A dry run writes nothing and takes no lock; everything else holds the root from here on.
    lock = contextlib.nullcontext() if args.dry_run else hold_root(cfg.root, "restore", create=True)
    with lock:
        if not args.dry_run:
            rs.recover(cfg.root)  # first: a half-swapped root must not pass for one holding state
        repo = open_repo(cfg)
        if args.if_empty and rs.has_icinga_state(cfg.state_dir):
            print(f"{escape(str(cfg.root))} already holds Icinga 2 state; nothing restored")
            if not args.dry_run:
                mark_ready(cfg.ready_file, StartOutcome("matched"))
            return EXIT_OK
        # --if-empty is the init container's start-up decision: it waits for Consul as the sidecar does.
        wait = at_startup if args.if_empty else retry
        try:
            record = wait(lambda: repo.record(args.snapshot))
        except NotFound:
            if args.if_empty and args.snapshot is None:
                if not args.fresh:
                    wait(lambda: _refuse_unless_fresh_prefix(cfg, repo))
                print(f"no snapshot of node {cfg.node} yet; nothing restored")
                if not args.dry_run:
                    mark_ready(cfg.ready_file, StartOutcome("nothing-to-restore"))
                return EXIT_OK
            raise
        if args.dry_run:
            return print_dry_run(cfg, repo, record, args)
        bar = Progress(sys.stderr, record.files, record.bytes, "restore")
        with _aborting(bar):
            res = rs.restore(repo, record, cfg.root, force=args.force or args.if_empty, progress=bar.update,
                             subtrees=tuple(p for _, p in cfg.roots))
        bar.close()
        aside = f"; previous content moved to {escape(str(res.aside))}" if res.aside else ""
        print(f"restored snapshot {escape(record.id)} of node {cfg.node}: {res.files} files, {res.bytes} bytes "
              f"into {escape(str(cfg.root))}{aside}")
        mark_ready(cfg.ready_file, StartOutcome("restored", record.id))
    return EXIT_OK


def _refuse_unless_fresh_prefix(cfg: config.Config, repo: Repo) -> None:
    """Raise RestoreRefused unless the prefix holds nothing at all: a node without a snapshot
    beside others that have one, or beside a published CA, is more likely a mistyped node name
    than a new installation, and going on would let Icinga 2 create a new CA."""
    from ..errors import PermissionDenied, RestoreRefused
    if cfg.role == "satellite":
        # A satellite's certificate comes from enrolment, never from a CA of its own: a new
        # satellite beside others is the normal way a fleet grows, not a typo to refuse.
        return
    layout = repo.layout
    try:
        nodes: list[str] | None = layout.nodes_with_snapshots(repo.store.keys(layout.nodes))
    except PermissionDenied:
        nodes = None  # a token for one node's prefix may not list the others
    try:
        ca: bool | None = repo.store.get(layout.ca) is not None
    except PermissionDenied:
        ca = None
    if nodes == [] and ca is False:
        return
    if nodes:
        seen = f"node(s) {', '.join(nodes)} have snapshots there"
    elif ca:
        seen = f"a CA is published at {layout.ca}"
    else:
        seen = "the token cannot see whether other nodes have snapshots there or a CA is published"
    raise RestoreRefused(f"no snapshot of node {cfg.node} under {cfg.prefix}, but {seen}: check --node "
                         f"(STATESYNC_NODE), or pass --fresh to start this node with no state; nothing restored")


def cmd_ready(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..restore.startup import wait_ready
    if wait_ready(cfg.ready_file, args.wait):
        print(f"ready: {cfg.ready_file}")
        return EXIT_OK
    print(f"not ready: {cfg.ready_file} does not exist", file=sys.stderr)
    return EXIT_FAILURE


def cmd_snapshots(cfg: config.Config, args: argparse.Namespace) -> int:
    records, pins = snapshot_rows(open_repo(cfg))
    if args.json:
        print(json.dumps([{**r.summary(), "pinned": r.id in pins, "ca_spki_sha256": r.ca} for r in records], indent=2))
        return EXIT_OK
    if not records:
        print(f"no snapshots for node {cfg.node} under {cfg.prefix}")
        return EXIT_OK
    print(f"{'ID':<32} {'CREATED':<30} {'FILES':>7} {'BYTES':>12}  PINNED")
    for r in records:
        # Ids and times come from records in Consul, where anyone who may write the prefix chose them.
        print(f"{escape(r.id):<32} {escape(r.created):<30} {r.files:>7} {r.bytes:>12}  "
              f"{'pinned' if r.id in pins else ''}".rstrip())
    return EXIT_OK


class _StoppedDuringStartup(BaseException):
    """SIGTERM or SIGINT before the daemon's own handlers are in place. A BaseException, so that no
    retry loop on the way (waiting for Consul, for the root lock) takes it for a failure to retry."""


def _stop_during_startup(signum, _frame) -> None:
    raise _StoppedDuringStartup(signal.Signals(signum).name)


def cmd_run(cfg: config.Config, args: argparse.Namespace) -> int:
    # A container engine stops a sidecar that is still restoring or waiting for Consul with the
    # same SIGTERM; dying of it unhandled reads as a crash (exit -15). Whatever a start-up restore
    # had begun is settled by the journal rule at the next start, as after a kill.
    signal.signal(signal.SIGTERM, _stop_during_startup)
    signal.signal(signal.SIGINT, _stop_during_startup)
    try:
        return _run(cfg)
    except _StoppedDuringStartup as exc:
        log.info("stopped during start-up", signal=str(exc))
        return EXIT_OK


def _run(cfg: config.Config) -> int:
    from .. import metrics
    from ..restore.rootlock import hold_root
    from ..restore.startup import at_startup, clear_ready, mark_ready, prepare
    from ..sidecar.daemon import Daemon
    if cfg.role is None:
        raise UsageError("role: run needs one: pass --role master or --role satellite (or set STATESYNC_ROLE, "
                         "or role in the config file)")
    repo = open_repo(cfg)
    holder: dict = {}
    server = _health_server(cfg, repo, holder)
    try:
        # Held for the daemon's whole life, so no restore or backup runs beside it. A second
        # sidecar on this root (a rolling update's overlap) waits rather than exits: it is a
        # service, and it takes over the moment the first one is gone.
        with hold_root(cfg.root, f"run --role {cfg.role}", create=True, wait=True):
            clear_ready(cfg.ready_file)
            # At start Consul may still be electing a leader; give it a while before giving up.
            outcome = at_startup(lambda: prepare(repo, cfg.root, cfg.role, cfg.on_conflict, cfg.roots))
            if cfg.role == "satellite":
                # Before the first enrolment (which waits for the ready marker): the parent's
                # certificate, checked against the published CA, for node setup to pin.
                from ..guard.parent import pin_at_startup
                pin_at_startup(cfg, repo.store, threading.Event())  # SIGTERM ends the wait (see cmd_run)
            mark_ready(cfg.ready_file, outcome)
            metrics.ready.set(1)
            log.info("ready", action=outcome.action, snapshot=outcome.snapshot, ready_file=str(cfg.ready_file))
            daemon = holder["daemon"] = Daemon(cfg, repo)
            return _serve(cfg, daemon, holder)
    finally:
        if server is not None:
            server.stop()


def _health_server(cfg: config.Config, repo: Repo, holder: dict):
    """Start /healthz, /readyz and /metrics when http.port is set; None otherwise."""
    if not cfg.http_port:
        return None
    from .. import __version__, metrics
    from ..sidecar.health import HealthServer

    def alive() -> tuple[bool, str]:
        daemon = holder.get("daemon")
        if daemon is None:
            return True, "starting: restoring or waiting for Consul"
        failing = daemon.state.failing(cfg.health_max_failures)
        if failing:
            return False, failing
        services = holder.get("services")
        problem = services.problem() if services is not None else ""
        if problem:
            return False, problem
        age = time.monotonic() - daemon.state.beat
        return age < 60, f"main loop last went round {age:.1f}s ago"

    def ready() -> tuple[bool, str]:
        if not cfg.ready_file.exists():
            return False, "start-up restore not finished"
        try:
            repo.store.ping()
        except StatesyncError as exc:
            return False, f"Consul: {exc}"
        return True, "ready"

    metrics.watch_store(repo.store)
    metrics.set_build_info(__version__)
    try:
        return HealthServer(cfg.http_bind, cfg.http_port, alive, ready).start()
    except OSError as exc:
        raise StatesyncError(f"http.port: cannot listen on {cfg.http_bind}:{cfg.http_port}: {exc.strerror}") from None


def _serve(cfg: config.Config, daemon, holder: dict) -> int:
    from ..sidecar import roles
    services = holder["services"] = roles.attach(cfg, daemon)  # master: publishes its CA; satellite: guards it
    daemon.install_signal_handlers()
    services.start()
    try:
        daemon.run()
    finally:
        services.stop()
    return services.exit_code


def cmd_check_ca(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..guard.satellite import check_ca
    return check_ca(cfg, sys.stdout, as_json=args.json)


def cmd_accept_ca(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..consul.store import Store
    from ..guard import accept
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("accept-ca asks for confirmation on a terminal; without one, pass --yes")
    accept.clean_reason(args.reason)
    store = Store(cfg.consul)
    p = accept.plan(cfg, store)
    print(f"published CA ({cfg.layout.ca}):")
    print("\n".join(accept.describe(p.published)))
    print(f"local CA ({cfg.state_dir / CA_CERT}):")
    print("\n".join(accept.describe(p.local)))
    if not p.needed:
        print("the local CA has the published key already: nothing to accept")
        return EXIT_OK
    if p.pending is not None:
        print(f"replacing the pending acceptance of key {p.pending.new_spki_sha256} by {p.pending.operator}")
    if not args.yes:
        answer = input("Accept this CA for the whole fleet? Every satellite will enrol again. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not accepted; nothing written")
            return EXIT_FAILURE
    a = accept.record(cfg, store, p, args.reason)
    print(f"accepted: {cfg.layout.ca_accept} records {a.old_spki_sha256 or '(none)'} -> {a.new_spki_sha256} "
          f"by {a.operator} at {a.time}; the master sidecar of node {cfg.node} publishes it on its next sync")
    return EXIT_OK


def cmd_rekey(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..consul.lock import holding_writer_lock
    from ..repo.rekey import rekey
    from ..snapshot.crypto import KeyFormatError, Sealer, parse_key
    try:
        with open(args.new_key_file, "rb") as fh:
            new = Sealer(parse_key(fh.read()))
    except OSError as exc:
        raise UsageError(f"--new-key-file: cannot read {args.new_key_file}: {exc.strerror}") from None
    except KeyFormatError as exc:
        raise UsageError(f"--new-key-file: {args.new_key_file}: {exc}") from None
    repo = open_repo(cfg)
    with holding_writer_lock(repo.store, repo.layout.lock, cfg.lock, cfg.node, "rekey") as fence:
        count = rekey(repo, new, fence=fence)
    print(f"re-encrypted {count} snapshot(s) of node {cfg.node} under key id {new.key_id}; "
          f"now set encryption_key_file to the new key")
    return EXIT_OK


def cmd_demo(cfg: config.Config, args: argparse.Namespace) -> int:
    from .demo import run_demo
    return run_demo()


COMMANDS = {"demo": cmd_demo, "keygen": cmd_keygen, "rekey": cmd_rekey, "backup": cmd_backup, "restore": cmd_restore, "snapshots": cmd_snapshots, "run": cmd_run,
            "ready": cmd_ready, "health": cmd_health, "pin-parent": cmd_pin_parent, "check-ca": cmd_check_ca, "accept-ca": cmd_accept_ca,
            "pin": cmd_pin, "unpin": cmd_unpin, "forget": cmd_forget, "gc": cmd_gc, "enrol": cmd_enrol,
            "satellites": cmd_satellites, "diff": cmd_diff, "verify": cmd_verify, "ls": cmd_ls, "nodes": cmd_nodes}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statesync`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    command = f"{args.command} --dry-run" if getattr(args, "dry_run", False) else args.command
    configured = as_json = False
    try:
        flags = setting_flags(args)
        if args.command == "keygen":
            # keygen makes the key the configuration names: a key file that does not exist yet (or
            # encrypt_all, which needs one) must not stop the command that creates it.
            flags.update({"encryption_key_file": "", "encryption_key": "", "encrypt_all": False})
        cfg = config.load(flags, config_file=getattr(args, "config", None))
        logs.configure(cfg.log_format, cfg.log_level, sys.stdout if args.command == "run" else sys.stderr)
        configured, as_json = True, cfg.log_format == "json"
        return COMMANDS[args.command](cfg, args)
    except StatesyncError as exc:
        # Several configuration errors (config.ConfigErrors) are one line each, every one escaped.
        for line in getattr(exc, "lines", ())[:-1]:
            _fatal(line, exit_code_for(exc, command), as_json)
        return _fatal(getattr(exc, "lines", (str(exc),))[-1], exit_code_for(exc, command), as_json)
    except KeyboardInterrupt as exc:
        print("statesync: interrupted", file=sys.stderr)
        return exit_code_for(exc, command)
    except OSError as exc:
        if configured:
            log.debug("unexpected error", exc_info=True)
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _fatal(f"{where}{exc.strerror or exc}", exit_code_for(exc, command), as_json)
    except Exception as exc:  # a bug: still one line, with the traceback in the debug log
        if configured:  # unconfigured, structlog would print the traceback at any level
            log.debug("unexpected error", exc_info=True)
        return _fatal(f"unexpected {type(exc).__name__}: {exc}", exit_code_for(exc, command), as_json)


def _fatal(message: str, code: int, as_json: bool) -> int:
    """Print the one line a failure gets; return ``code``. With JSON logs it is JSON too: a log
    collector reading stderr line by line would misparse a plain line among JSON ones. A name in
    the message (a file below --root, a path asked for) cannot break the line; JSON escapes a
    newline itself, and gets a message holding bytes that are not UTF-8 escaped."""
    if as_json:
        error = message if exact(message) else one_line(message)
        print(json.dumps({"level": "error", "event": "statesync: error", "error": error, "exit_code": code},
                         ensure_ascii=False), file=sys.stderr)
    else:
        print(f"statesync: error: {one_line(message)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
