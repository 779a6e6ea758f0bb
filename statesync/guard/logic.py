"""The satellite CA guard's decisions. Pure: no I/O, no clock; every input is an argument.

The guard purges a satellite's certificates only on a *mismatch*: the local CA has
another public key than the published one, or the local node certificate does not
verify against the published CA. A renewed CA certificate with the same key is not
a mismatch. Anything the guard cannot read or verify is *cannot tell*, which never
purges: a missing or invalid published CA, a missing local ca.crt (a node not
enrolled yet), an unparsable local file, an unreachable Consul.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Iterable

from ..disk import LOCAL_CA, TICKET, TRUSTED_PARENT, node_cert, node_csr, node_key
from ..errors import CorruptData
from ..pki import cadoc, fingerprint
from ..pki.cadoc import PublishedCA

_STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_STAMP_RE = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)(?:-\d+)?$")


class Verdict(str, Enum):
    MATCH = "match"
    RENEWED = "renewed-same-key"
    MISMATCH = "mismatch"
    UNKNOWN = "cannot-tell"


# check-ca exit codes, usable as a container healthcheck
CHECK_EXIT = {Verdict.MATCH: 0, Verdict.RENEWED: 0, Verdict.MISMATCH: 1, Verdict.UNKNOWN: 2}


@dataclass(frozen=True)
class Decision:
    """One comparison of the local CA with the published one, with both fingerprints."""

    verdict: Verdict
    reason: str
    local_spki: str | None = None
    local_cert: str | None = None
    published_spki: str | None = None
    published_cert: str | None = None
    published: PublishedCA | None = field(default=None, repr=False, compare=False)
    # The published certificate would have been a mismatch but is no CA worth acting on.
    untrusted: bool = False

    @property
    def exit_code(self) -> int:
        """The ``statesync check-ca`` exit code: 0 match, 1 mismatch, 2 cannot tell."""
        return CHECK_EXIT[self.verdict]

    def log_fields(self) -> dict:
        """Key/values for a structured log event; both fingerprints always present (None if unknown)."""
        return {"verdict": self.verdict.value, "reason": self.reason,
                "local_ca_spki_sha256": self.local_spki, "published_ca_spki_sha256": self.published_spki,
                "local_ca_cert_sha256": self.local_cert, "published_ca_cert_sha256": self.published_cert}


def decide(local_ca_pem: bytes | None, published_blob: bytes | None, node_cert_pem: bytes | None,
           node_cert_path: str = "the node certificate", now: float | None = None,
           clock_skew: float = 300.0) -> Decision:
    """Compare the local CA (and node certificate) with the published CA document.

    ``local_ca_pem``: bytes of certs/ca.crt, None when it does not exist.
    ``published_blob``: the raw value at ``<prefix>/ca``, None when the key does not exist.
    ``node_cert_pem``: bytes of certs/<node>.crt, None when it does not exist.
    ``now`` (epoch seconds) and ``clock_skew``: a published certificate outside its validity
    period by more than the skew is never a mismatch (dates unchecked when ``now`` is None).
    Returns a Decision; never raises for bad input (bad input is ``cannot-tell``).
    """
    local_spki = local_cert = local_error = None
    if local_ca_pem is not None:
        try:
            local_spki, local_cert = fingerprint.identity(local_ca_pem)
        except CorruptData as exc:
            local_error = str(exc)
    published = published_error = None
    if published_blob is not None:
        try:
            published = cadoc.decode(published_blob)
        except CorruptData as exc:
            published_error = str(exc)
    fp = dict(local_spki=local_spki, local_cert=local_cert,
              published_spki=published.spki_sha256 if published else None,
              published_cert=published.cert_sha256 if published else None, published=published)

    if published_blob is None:
        return Decision(Verdict.UNKNOWN, "no CA is published yet", **fp)
    if published is None:
        return Decision(Verdict.UNKNOWN, f"the published CA is invalid: {published_error}", **fp)
    if node_cert_pem is not None:
        # A pending request is a node on its way to the published CA, not one left under an
        # old CA: quarantining it would throw away the request the master is about to sign.
        try:
            pending = fingerprint.self_signed(node_cert_pem)
        except CorruptData as exc:
            return Decision(Verdict.UNKNOWN, f"{node_cert_path} is unreadable: {exc}", **fp)
        if pending:
            return Decision(Verdict.UNKNOWN, f"{node_cert_path} is self-signed: its certificate request is "
                                             "pending (enrolling)", **fp)
    if local_ca_pem is None:
        return Decision(Verdict.UNKNOWN, f"{LOCAL_CA} is missing: the node is not enrolled yet", **fp)
    if local_error is not None:
        return Decision(Verdict.UNKNOWN, f"{LOCAL_CA} is unreadable: {local_error}", **fp)
    if local_spki != published.spki_sha256:
        return _mismatch("the local CA has another public key than the published CA", now, clock_skew, fp)
    if node_cert_pem is not None:
        try:
            verifies = fingerprint.issued_by(node_cert_pem, published.pem)
        except CorruptData as exc:
            return Decision(Verdict.UNKNOWN, f"{node_cert_path} is unreadable: {exc}", **fp)
        if not verifies:
            return _mismatch(f"{node_cert_path} does not verify against the published CA", now, clock_skew, fp)
    if local_cert != published.cert_sha256:
        return Decision(Verdict.RENEWED, "the CA certificate differs but its key is the same: a renewal", **fp)
    return Decision(Verdict.MATCH, "the local CA is the published CA", **fp)


def _mismatch(reason: str, now: float | None, clock_skew: float, fp: dict) -> Decision:
    """A mismatch, unless the published certificate is no CA worth purging for.

    Checked only here: a match or a same-key renewal never purges, so an odd published
    certificate there (a renewal valid from next month, say) harms nothing.
    """
    try:
        problem = fingerprint.untrusted_ca(fp["published"].pem, now, clock_skew)
    except CorruptData as exc:
        problem = str(exc)
    if problem is None:
        return Decision(Verdict.MISMATCH, reason, **fp)
    return Decision(Verdict.UNKNOWN, f"the published CA is not trusted: {problem}", untrusted=True, **fp)


def cannot_tell(reason: str, local_ca_pem: bytes | None = None) -> Decision:
    """A ``cannot-tell`` decision for a failure outside ``decide`` (Consul unreachable, say),
    still carrying the local fingerprint when the local CA parses."""
    local_spki = local_cert = None
    if local_ca_pem is not None:
        try:
            local_spki, local_cert = fingerprint.identity(local_ca_pem)
        except CorruptData:
            pass
    return Decision(Verdict.UNKNOWN, reason, local_spki=local_spki, local_cert=local_cert)


def same_mismatch(first: Decision, again: Decision) -> bool:
    """True when ``again`` confirms ``first``: both mismatches between the same local CA
    and the same published key. A change on either side restarts the confirmation."""
    return (first.verdict is Verdict.MISMATCH and again.verdict is Verdict.MISMATCH
            and (first.local_spki, first.local_cert, first.published_spki)
            == (again.local_spki, again.local_cert, again.published_spki))


def purge_allowed(last_purge: float | None, now: float, window: float) -> bool:
    """True when no purge happened within ``window`` seconds before ``now`` (epoch seconds).

    A purge dated in the future (the clock went back) counts as recent: waiting is
    the safe side of a doubt.
    """
    if last_purge is None or window <= 0:
        return True
    return now - last_purge >= window


def quarantine_stamp(now: datetime) -> str:
    """The directory name of a purge at ``now``: UTC, sortable, microseconds."""
    return now.astimezone(timezone.utc).strftime(_STAMP_FORMAT)


def last_purge_time(names: Iterable[str], now: float | None = None, clock_skew: float = 300.0) -> float | None:
    """The epoch time of the newest purge among quarantine directory ``names``, or None.

    Names dated more than ``clock_skew`` seconds after ``now`` are ignored (see
    ``future_purges``): a directory from a wrong clock, or made by hand, would otherwise
    forbid every purge until its date.
    """
    times = [t for _, t in _stamps(names) if now is None or t <= now + clock_skew]
    return max(times) if times else None


def future_purges(names: Iterable[str], now: float, clock_skew: float = 300.0) -> list[str]:
    """The quarantine directory names dated more than ``clock_skew`` seconds after ``now``."""
    return [name for name, t in _stamps(names) if t > now + clock_skew]


def _stamps(names: Iterable[str]) -> Iterable[tuple[str, float]]:
    for name in names:
        m = _STAMP_RE.match(name)
        if not m:
            continue
        try:
            yield name, datetime.strptime(m.group(1), _STAMP_FORMAT).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue


def quarantine_files(cert_name: str) -> list[str]:
    """The certs/ files a purge moves, relative to the root, in order.

    ca.crt comes last: a purge interrupted half-way leaves ca.crt in place, so the
    guard still sees the mismatch and the node is never left looking "not enrolled"
    with half of its certificates gone.
    """
    return [node_cert(cert_name), node_key(cert_name), node_csr(cert_name), TICKET, TRUSTED_PARENT, LOCAL_CA]
