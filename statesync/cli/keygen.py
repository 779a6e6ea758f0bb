"""``statesync keygen``: a new encryption key, to a file (mode 0600) or to stdout for a secret store."""
from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import EXIT_OK, StatesyncError, UsageError


def cmd_keygen(cfg: config.Config, args: argparse.Namespace) -> int:
    import os

    from ..snapshot.crypto import format_key, generate_key
    if args.out == "-":
        # For a secret store that reads stdin (docker secret create NAME -): no file ever holds the key.
        if args.group is not None:
            raise UsageError("--group: a key written to stdout (--out -) has no file to give a group")
        sys.stdout.write(format_key(generate_key()) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    mode = 0o600 if args.group is None else 0o640
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"--out: {args.out} exists; statesync never overwrites a key") from None
    except OSError as exc:
        raise StatesyncError(f"--out: cannot create {args.out}: {exc.strerror}") from None
    try:
        if args.group is not None:
            try:  # group first, then the mode: never readable by a group it was not meant for
                os.fchown(fd, -1, args.group)
            except OSError as exc:
                os.unlink(args.out)
                raise StatesyncError(f"--group: cannot give {args.out} to group {args.group}: {exc.strerror}") from None
        os.fchmod(fd, mode)
        os.write(fd, (format_key(generate_key()) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    group = "" if args.group is None else f", group {args.group}"
    print(f"wrote a new encryption key to {args.out} (mode {mode:04o}{group}); keep a copy outside Consul")
    return EXIT_OK
