"""``statesync accept-ca``: an operator's one-time, recorded decision that the fleet trusts another CA.

The record goes to ``<prefix>/ca-accept`` (``pki.ca_acceptance``); the master sidecar whose
committed CA it names publishes that CA once, deleting the record in the same
transaction and filing it in ``<prefix>/ca-history`` with the CA it replaced.
"""
from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import Config
from ..consul.store import Store
from ..disk import CA_CERT
from ..errors import CorruptData, StatesyncError, UsageError
from ..pki import ca_acceptance, cadoc
from ..pki.cadoc import PublishedCA


@dataclass(frozen=True)
class CaProposal:
    published: PublishedCA | None
    local: PublishedCA
    pending: ca_acceptance.Acceptance | None
    pending_index: int

    @property
    def needed(self) -> bool:
        """False when the local CA's key is the published one: nothing to accept."""
        return self.published is None or self.published.spki_sha256 != self.local.spki_sha256


def propose(cfg: Config, store: Store) -> CaProposal:
    """Read the local ca/ca.crt and the published CA; raise StatesyncError when the local one is unusable."""
    path = cfg.state_dir / CA_CERT
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise StatesyncError(f"{path} does not exist: nothing to accept") from None
    except OSError as exc:
        raise StatesyncError(f"cannot read {path}: {exc.strerror}") from None
    try:
        local = cadoc.from_pem(pem, published="", node=cfg.node, snapshot="")
    except CorruptData:
        raise StatesyncError(f"{path} is not a PEM certificate") from None
    pair = store.get(cfg.layout.ca, consistent=True)
    published = None
    if pair is not None:
        try:
            published = cadoc.decode(pair.value)
        except CorruptData:
            published = None  # an invalid document is replaced by the publisher without any decision
    pending = ca_acceptance.read_pending(store, cfg.layout.ca_accept)
    return CaProposal(published, local, pending.record, pending.index)


def record(cfg: Config, store: Store, p: CaProposal, reason: str) -> ca_acceptance.Acceptance:
    """Write the acceptance of ``p.local`` in place of ``p.published`` by check-and-set; return it.

    A pending record for another change is replaced (the latest decision counts); raises
    CasConflict when another operator wrote one meanwhile.
    """
    reason = clean_reason(reason)
    a = ca_acceptance.Acceptance(
        old_spki_sha256=p.published.spki_sha256 if p.published is not None else "",
        new_spki_sha256=p.local.spki_sha256, new_cert_sha256=p.local.cert_sha256, new_subject=p.local.subject,
        node=cfg.node, operator=f"{_user()}@{socket.gethostname()}",
        time=datetime.now(timezone.utc).isoformat(timespec="seconds"), reason=reason)
    store.put(cfg.layout.ca_accept, ca_acceptance.encode_acceptance(a), cas=p.pending_index)
    return a


def clean_reason(reason: str) -> str:
    """The reason on one line; raise UsageError when empty or too long."""
    reason = " ".join(reason.split())
    if not reason:
        raise UsageError("--reason: say why the fleet's CA changes (it is recorded)")
    if len(reason) > ca_acceptance.MAX_REASON:
        raise UsageError(f"--reason: at most {ca_acceptance.MAX_REASON} characters")
    return reason


def history_items(cfg: Config, store: Store) -> list[dict]:
    """``check-ca --json``'s view of the CAs the fleet trusted before, newest first (docs/JSON.md)."""
    try:
        pair = store.get(cfg.layout.ca_history)
    except StatesyncError:
        return []
    out = []
    for item in ca_acceptance.decode_history(pair.value if pair is not None else None):
        doc, acc = item.get("doc") or {}, item.get("acceptance") or {}
        out.append({"spki_sha256": doc.get("spki_sha256"), "cert_sha256": doc.get("cert_sha256"),
                    "subject": doc.get("subject"), "node": doc.get("node"), "replaced": item.get("replaced"),
                    "by": item.get("by"), "decision": item.get("decision"), "operator": acc.get("operator"),
                    "reason": acc.get("reason")})
    return out


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"
