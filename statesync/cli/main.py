"""``statesync COMMAND``: parse the arguments, load the config, call the command's action and map
every error to its exit code, in one place. Each command's action and its printing are in a
module of its own in this package (``backup``, ``restore``, ...); its parser is in ``parsers``."""
from __future__ import annotations

import json
import sys
from typing import Sequence

import structlog

from .. import config
from ..errors import StatesyncError, exit_code_for
from ..sidecar import logs
from ..snapshot.names import exact, one_line
from .backup import cmd_backup
from .ca import cmd_accept_ca, cmd_check_ca
from .demo import cmd_demo
from .diff import cmd_diff
from .enrol import cmd_enrol
from .forget import cmd_forget
from .gc import cmd_gc
from .health import cmd_health
from .keygen import cmd_keygen
from .ls import cmd_ls
from .nodes import cmd_nodes
from .parsers import build_parser, setting_flags
from .pin import cmd_pin, cmd_unpin
from .pin_parent import cmd_pin_parent
from .ready import cmd_ready
from .rekey import cmd_rekey
from .restore import cmd_restore
from .run import cmd_run
from .satellites import cmd_satellites
from .snapshots import cmd_snapshots
from .verify import cmd_verify

log = structlog.get_logger(__name__)


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
