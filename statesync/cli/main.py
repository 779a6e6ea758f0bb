"""``statesync COMMAND``: parse the arguments, load the config, call the command's action and map
every error to its exit code, in one place. Each command's action and its printing are in a
module of its own in this package (``backup``, ``restore``, ...); its parser is in ``parsers``."""
from __future__ import annotations

import importlib
import json
import sys
from typing import Sequence

import structlog

from .. import config
from ..errors import StatesyncError, exit_code_for
from ..sidecar import logs
from ..snapshot.names import exact, one_line
from .parsers import build_parser, setting_flags

log = structlog.get_logger(__name__)


# Each command's module, imported when that command runs: a command pays for its own imports
# only (the container's health probe starts a process every few seconds, and a restore's start is
# part of the time to recovery: docs/BENCH.md, "Restore against its real limit").
COMMANDS = {"demo": "demo", "keygen": "keygen", "rekey": "rekey", "backup": "backup", "restore": "restore",
            "snapshots": "snapshots", "run": "run", "ready": "ready", "health": "health", "pin-parent": "pin_parent",
            "check-ca": "ca", "accept-ca": "ca", "pin": "pin", "unpin": "pin", "forget": "forget", "gc": "gc",
            "enrol": "enrol", "satellites": "satellites", "diff": "diff", "verify": "verify", "ls": "ls",
            "nodes": "nodes"}


def command_function(name: str):
    """The ``cmd_*`` function of command ``name``, its module imported now."""
    module = importlib.import_module(f".{COMMANDS[name]}", __package__)
    return getattr(module, "cmd_" + name.replace("-", "_"))


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
        return command_function(args.command)(cfg, args)
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
