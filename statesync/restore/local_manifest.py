"""The local tree against a snapshot, for ``statesync diff`` and ``restore --dry-run``.

A snapshot addresses a sealed (encrypted) file by the sealer's keyed address, not by its
SHA-256; the local side of such a file is addressed the same way before the two are compared,
or every private key would read as changed.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import EncryptionKeyError
from ..repo.repository import Repo
from ..snapshot.manifest import FILE, Entry, Manifest
from ..tree.dirfd import open_below
from ..tree.globs import PathFilter
from ..tree.scan import Scanner

_READ = 1 << 20


def local_manifest(root: Path, path_filter: PathFilter, chunk_size: int, against: Manifest,
                   repo: Repo) -> Manifest:
    """The tree under ``root`` as a manifest comparable with ``against`` (empty when root is
    absent): a file ``against`` holds sealed is addressed as the snapshot addressed it. Raises
    EncryptionKeyError when that needs a key that is not configured, OSError naming the path."""
    if not root.exists():
        return Manifest()
    # Compared by content address only: nothing to compress, nothing to seal. The chunks are
    # handed to a sink that drops them, or the scan would hold the whole tree in memory.
    current = Scanner(root, path_filter, chunk_size, compression="none").scan(
        set(), sink=lambda _digest, _chunk: None, written=lambda _digest: True).manifest
    sealed = {e.path for e in against.entries if e.sealed and e.type == FILE}
    todo = [e for e in current.entries if e.path in sealed and e.type == FILE]
    if not todo:
        return current
    if repo.sealer is None:
        raise EncryptionKeyError(f"the snapshot holds encrypted files ({todo[0].path}, ...): comparing them "
                                 f"needs its encryption key (encryption_key_file)")
    keyed = {e.path: _sealed(root, e, repo) for e in todo}
    return Manifest(tuple(keyed.get(e.path, e) for e in current.entries), current.root)


def _sealed(root: Path, e: Entry, repo: Repo) -> Entry:
    parent, _, name = e.path.rpartition("/")
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dir_fd = fd = -1
    try:
        dir_fd = open_below(root_fd, parent)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        h = repo.sealer.hasher()
        while piece := os.read(fd, _READ):
            h.update(piece)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(root / e.path)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if dir_fd not in (-1, root_fd):
            os.close(dir_fd)
        os.close(root_fd)
    return dataclasses.replace(e, sha256=h.hexdigest(), sealed=True)
