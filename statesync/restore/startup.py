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
from ..consul.store import retry
from ..disk import CA_CERT
from ..errors import CaConflict, CorruptData, PermissionDenied
from ..fsutil import keeping_times, write_atomic
from ..repo.repository import Repo
from ..snapshot.manifest import FILE
from ..snapshot.record import Record
from .apply import has_icinga_state, recover, restore, user_entries

log = structlog.get_logger(__name__)

# How long the start-up decision (the sidecar's prepare, `restore --if-empty`) waits for Consul:
# 8 attempts, the pause doubling from 0.2 s up to 10 s, about 23 s of pauses, plus each refused
# attempt's own time (a server with no leader, or one still replaying its log, holds a read for
# up to 7 s before it refuses it). After that the command fails, nothing written, and the
# orchestrator starts it again: "Consul is not ready" is never "nothing to restore".
STARTUP_ATTEMPTS = 8
STARTUP_BACKOFF_CAP = 10.0


@dataclass(frozen=True)
class StartOutcome:
    action: str  # "restored", "nothing-to-restore", "kept-local", "accepted", "matched", "no-ca"
    snapshot: str = ""


def at_startup(decide):
    """Run ``decide`` (reads Consul, then acts), retrying ConsulUnavailable for the start-up wait."""
    return retry(decide, attempts=STARTUP_ATTEMPTS, cap=STARTUP_BACKOFF_CAP)


def ca_identity(pem: bytes) -> str:
    """Return the SHA-256 of the CA's public key (SPKI DER), hex; raise StatesyncError if unparsable."""
    from ..pki.fingerprint import spki_sha256
    return spki_sha256(pem)


def snapshot_ca(repo: Repo, record: Record, state: str = "") -> bytes | None:
    """The ca/ca.crt bytes a snapshot holds (below ``state``, the root-relative state subtree), or None."""
    path = f"{state}/{CA_CERT}" if state else CA_CERT
    entry = repo.manifest(record).find(path).get(path)
    if entry is None or entry.type != FILE:
        return None
    sealed = set(entry.chunks) if entry.sealed else set()
    contents = repo.fetch_chunks(set(entry.chunks) - sealed, sealed, record.key_id)
    return repo.file_bytes(entry, contents)


def published_ca(repo: Repo):
    """The verified document at ``<prefix>/ca``, or None (absent, or invalid: logged)."""
    from ..pki import cadoc
    pair = repo.store.get(repo.layout.ca, consistent=True)
    if pair is None:
        return None
    try:
        return cadoc.decode(pair.value)
    except CorruptData as exc:
        log.warning("the published CA is invalid; comparing with the node's own snapshot only",
                    key=repo.layout.ca, error=str(exc))
        return None


def pending_acceptance(repo: Repo):
    """The operator's pending ``accept-ca`` record, or None (absent, or invalid: logged)."""
    from ..pki.ca_acceptance import read_pending
    try:
        pending = read_pending(repo.store, repo.layout.ca_accept)
    except PermissionDenied as exc:
        log.warning("cannot read the CA acceptance record", error=str(exc))
        return None
    if pending.invalid:
        log.warning("the CA acceptance record is invalid; ignored", key=repo.layout.ca_accept, error=pending.invalid)
    return pending.record


def prepare(repo: Repo, root: Path, role: str, on_conflict: str = "refuse",
            roots: tuple[tuple[str, str], ...] = ()) -> StartOutcome:
    """Bring ``root`` into a state the sidecar may mirror from.

    ``roots``: the (name, root-relative path) subtrees of the setting roots; with them, the
    CA is looked for below the one named state, and only the subtrees are restored.

    Every read it decides on is consistent (the Store's reads): a Consul server replaying its
    log after a restart refuses them, ConsulUnavailable, which ``at_startup`` retries; it never
    reads the head as absent or old.

    Restores the latest snapshot when ``root`` holds no Icinga 2 state. For a master,
    a local CA whose key differs from the published CA (``<prefix>/ca``, whichever node
    published it; without one, from the CA of the node's latest snapshot) is a conflict,
    unless an operator's pending ``accept-ca`` record names exactly that change:
    ``refuse`` raises CaConflict and touches nothing, ``keep-local`` lets the local state
    become the new truth (logged at error level), ``restore`` moves the local state aside
    and restores the node's latest snapshot. Raises StatesyncError.
    """
    recover(root)
    subtrees = tuple(path for _, path in roots)
    state = dict(roots).get("state", "")
    state_dir = root / state if state else root
    head = repo.checked_head().record
    if head is not None:
        # A restarted sidecar's last commit is the head, not "never": /metrics says so from the start.
        metrics.record_head(head.created)
    if head is None:
        if role == "master" and (state_dir / CA_CERT).exists():
            try:
                local_fp = ca_identity((state_dir / CA_CERT).read_bytes())
            except CorruptData:
                local_fp = ""  # never published either: the publisher skips what does not parse
            if local_fp:
                published = published_ca(repo)
                if published is not None and published.spki_sha256 != local_fp:
                    # A typo'd --node or a second master: no snapshot of its own, a CA of its own.
                    return _ca_conflict(repo, root, None, local_fp, published.spki_sha256,
                                        f"the published CA (by node {published.node or '?'})", on_conflict,
                                        subtrees=subtrees)
        log.info("no snapshot in Consul yet; starting from the local state", node=repo.layout.node)
        return StartOutcome("nothing-to-restore")
    if not has_icinga_state(state_dir):
        res = restore(repo, head, root, force=bool(user_entries(root, subtrees)), subtrees=subtrees)
        metrics.restores.inc()
        # aside: what held no Icinga 2 state yet was moved there (an image's defaults, 2.16 on)
        log.info("restored an empty root", snapshot=head.id, files=res.files, bytes=res.bytes,
                 **({"aside": str(res.aside)} if res.aside else {}))
        return StartOutcome("restored", head.id)
    if role != "master":
        return StartOutcome("matched", head.id)
    local_path = state_dir / CA_CERT
    if not local_path.exists():
        return StartOutcome("no-ca", head.id)
    published = published_ca(repo)
    if published is not None:
        remote_fp, what = published.spki_sha256, f"the published CA (by node {published.node or '?'})"
    else:
        remote = snapshot_ca(repo, head, state)
        if remote is None:
            return StartOutcome("no-ca", head.id)
        remote_fp, what = ca_identity(remote), f"the CA of snapshot {head.id}"
    local_fp = ca_identity(local_path.read_bytes())
    if local_fp == remote_fp:
        return StartOutcome("matched", head.id)
    return _ca_conflict(repo, root, head, local_fp, remote_fp, what, on_conflict,
                        published.spki_sha256 if published is not None else "", subtrees)


def _ca_conflict(repo: Repo, root: Path, head: Record | None, local_fp: str, remote_fp: str, what: str,
                 on_conflict: str, published_fp: str | None = None, subtrees: tuple[str, ...] = ()) -> StartOutcome:
    """Resolve a master's local CA differing from ``remote_fp``; raise CaConflict when refused."""
    sid = head.id if head is not None else ""
    accepted = pending_acceptance(repo)
    if accepted is not None and accepted.allows(remote_fp if published_fp is None else published_fp, local_fp):
        log.warning("local CA differs from the published one, as accepted by an operator; it is published once",
                    local_ca_spki_sha256=local_fp, published_ca_spki_sha256=remote_fp, operator=accepted.operator,
                    reason=accepted.reason)
        return StartOutcome("accepted", sid)
    fields = dict(local_ca_spki_sha256=local_fp, reference_ca_spki_sha256=remote_fp, reference=what,
                  snapshot=sid, on_conflict=on_conflict)
    if on_conflict == "keep-local":
        log.error("local CA differs from the published one; on_conflict=keep-local overrides: keeping the local "
                  "one as the new truth (use statesync accept-ca instead)", **fields)
        return StartOutcome("kept-local", sid)
    if on_conflict == "restore" and head is not None:
        res = restore(repo, head, root, force=True, subtrees=subtrees)
        metrics.restores.inc()
        log.warning("local CA differs from the published one; moved the local state aside and restored",
                    aside=str(res.aside), **fields)
        return StartOutcome("restored", head.id)
    log.error("local CA differs from the trusted one; refusing to touch either", **fields)
    restore_note = "" if head is not None else f" (node {repo.layout.node} has no snapshot to restore)"
    raise CaConflict(f"local CA (public key sha256 {local_fp}) differs from {what} (public key sha256 "
                     f"{remote_fp}); nothing was changed{restore_note}. Check --node; to make the local CA the "
                     f"fleet's, run statesync accept-ca; or set on_conflict to restore")


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
