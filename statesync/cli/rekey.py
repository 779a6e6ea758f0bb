"""``statesync rekey``: re-encrypt the node's kept snapshots under a new key."""
from __future__ import annotations

import argparse

from .. import config
from ..errors import EXIT_OK, KeyFormatError, UsageError
from ..sidecar.wiring import open_repo


def cmd_rekey(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..consul.lock import holding_writer_lock
    from ..repo.rekey import rekey
    from ..snapshot.crypto import Sealer, parse_key
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
