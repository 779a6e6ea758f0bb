"""What a sidecar does before it mirrors: finish an interrupted restore, restore an
empty root, refuse to let a freshly generated CA replace the published one, and
signal readiness so that Icinga 2 starts only after all of that."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from .. import metrics
from ..errors import StatesyncError
from ..fsutil import keeping_times, write_atomic
from ..repo.repository import Repo
from ..snapshot.manifest import FILE
from ..snapshot.record import Record
from .apply import has_icinga_state, recover, restore, user_entries

log = structlog.get_logger(__name__)

CA_CERT = "ca/ca.crt"


class CaConflict(StatesyncError):
    """The root holds a CA other than the one in the node's latest snapshot."""


@dataclass(frozen=True)
class StartOutcome:
    action: str  # "restored", "nothing-to-restore", "kept-local", "matched", "no-ca"
    snapshot: str = ""


def ca_identity(pem: bytes) -> str:
    """Return the SHA-256 of the CA's public key (SPKI DER), hex; raise StatesyncError if unparsable."""
    from ..pki.fingerprint import spki_sha256
    return spki_sha256(pem)


def snapshot_ca(repo: Repo, record: Record) -> bytes | None:
    """The ca/ca.crt bytes a snapshot holds, or None."""
    entry = repo.manifest(record).by_path().get(CA_CERT)
    if entry is None or entry.type != FILE:
        return None
    sealed = set(entry.chunks) if entry.sealed else set()
    contents = repo.fetch_chunks(set(entry.chunks) - sealed, sealed, record.key_id)
    return repo.file_bytes(entry, contents)


def prepare(repo: Repo, root: Path, role: str, on_conflict: str = "refuse") -> StartOutcome:
    """Bring ``root`` into a state the sidecar may mirror from.

    Restores the latest snapshot when ``root`` holds no Icinga 2 state. For a master,
    a local CA whose key differs from the snapshot's is a conflict: ``refuse`` raises
    CaConflict and touches nothing, ``keep-local`` lets the local state become the new
    truth, ``restore`` moves the local state aside and restores. Raises StatesyncError.
    """
    recover(root)
    head = repo.checked_head().record
    if head is None:
        log.info("no snapshot in Consul yet; starting from the local state", node=repo.layout.node)
        return StartOutcome("nothing-to-restore")
    if not has_icinga_state(root):
        res = restore(repo, head, root, force=bool(user_entries(root)))
        metrics.restores.inc()
        log.info("restored an empty root", snapshot=head.id, files=res.files, bytes=res.bytes)
        return StartOutcome("restored", head.id)
    if role != "master":
        return StartOutcome("matched", head.id)
    local_path = root / CA_CERT
    remote = snapshot_ca(repo, head)
    if remote is None or not local_path.exists():
        return StartOutcome("no-ca", head.id)
    local_fp, remote_fp = ca_identity(local_path.read_bytes()), ca_identity(remote)
    if local_fp == remote_fp:
        return StartOutcome("matched", head.id)
    fields = dict(local_ca_spki_sha256=local_fp, snapshot_ca_spki_sha256=remote_fp, snapshot=head.id,
                  on_conflict=on_conflict)
    if on_conflict == "keep-local":
        log.warning("local CA differs from the published one; keeping the local one as the new truth", **fields)
        return StartOutcome("kept-local", head.id)
    if on_conflict == "restore":
        res = restore(repo, head, root, force=True)
        metrics.restores.inc()
        log.warning("local CA differs from the published one; moved the local state aside and restored",
                    aside=str(res.aside), **fields)
        return StartOutcome("restored", head.id)
    log.error("local CA differs from the CA in the latest snapshot; refusing to touch either", **fields)
    raise CaConflict(f"local CA (public key sha256 {local_fp}) differs from the CA of snapshot {head.id} "
                     f"(public key sha256 {remote_fp}); nothing was changed. Set on_conflict to keep-local "
                     f"or restore to resolve")


def mark_ready(ready_file: Path, outcome: StartOutcome) -> None:
    """Write the readiness marker atomically."""
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    doc = {"action": outcome.action, "snapshot": outcome.snapshot, "time": time.time(), "pid": os.getpid()}
    with keeping_times(ready_file.parent):
        write_atomic(ready_file, json.dumps(doc).encode(), mode=0o644)


def clear_ready(ready_file: Path) -> None:
    """Remove a marker left by an earlier run, so a stale one never lets Icinga 2 start early."""
    try:
        with keeping_times(ready_file.parent):
            ready_file.unlink()
    except FileNotFoundError:
        pass


def wait_ready(ready_file: Path, timeout: float) -> bool:
    """Return True once ``ready_file`` exists, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if ready_file.exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
