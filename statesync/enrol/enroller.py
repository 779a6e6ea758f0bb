"""The satellite's side of enrolment: while its certificate is a pending request, trust the
published CA and register the request in Consul; never touch a certificate a CA signed.

``icinga2 node setup`` without a ticket leaves a self-signed ``certs/<cn>.crt`` and a request
pending on the master. This module then writes certs/ca.crt from ``<prefix>/ca`` (read with
the sidecar's token: Consul authenticated it, so this is no trust on first use) and puts
``<prefix>/satellites/<cn>`` naming the request's public key, the request fingerprint and
the CA, by check-and-set, again whenever the key changes. A certificate issued by another
CA is the CA guard's business (quarantine, restart, a new request); one issued by the
published CA means the node is enrolled, and nothing is written.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import structlog
from cryptography.hazmat.primitives.serialization import Encoding

from .. import metrics
from ..config import Config
from ..consul.store import Store
from ..disk import CERTS_DIR, LOCAL_CA, node_cert, node_cert_name, node_key
from ..errors import CasConflict, CorruptData, EnrolError, StatesyncError
from ..fsutil import write_atomic
from ..pki import cadoc, fingerprint
from . import registration

log = structlog.get_logger(__name__)

NO_REQUEST = "no-request"      # no certs/<cn>.crt yet: node setup has not run
WAITING_CA = "waiting-for-ca"  # a request, but no valid CA published to register under
REGISTERED = "registered"      # the request is registered; the master accepts and signs it
ENROLLED = "enrolled"          # certs/<cn>.crt is issued by the published CA
OTHER_CA = "other-ca"          # issued by another CA: the guard decides
STATES = (NO_REQUEST, WAITING_CA, REGISTERED, ENROLLED, OTHER_CA)

# A pending request is re-checked this often: the registration must follow a new key at once.
PENDING_RECHECK = 1.0
# Check-and-set rounds on one registration: two writers of the same request settle in two.
REGISTER_ATTEMPTS = 3


@dataclass(frozen=True)
class Outcome:
    state: str
    detail: str
    cn: str = ""
    registration: registration.Registration | None = None


class Enroller:
    """One satellite's enrolment; ``step()`` is one pass, ``start()`` runs passes in a thread."""

    def __init__(self, cfg: Config, store: Store, clock: Callable[[], float] = time.time):
        self.cfg, self.store, self.clock = cfg, store, clock
        self.settings = cfg.enrol
        self.certs = cfg.state_dir / CERTS_DIR
        self.last: Outcome | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ----------------------------------------------------------------------

    def cert_name(self) -> str:
        try:
            names = os.listdir(self.certs)
        except OSError:
            names = []
        return node_cert_name(names, self.cfg.guard.cert_name, self.cfg.node)

    def step(self) -> Outcome:
        """Look at the node's certificate; register it when it is a pending request."""
        cn = self.cert_name()
        path = self.cfg.state_dir / node_cert(cn)
        try:
            cert = path.read_bytes()
        except FileNotFoundError:
            return self._note(Outcome(NO_REQUEST, f"{path} does not exist yet: node setup (without a ticket) "
                                                  "makes the request", cn))
        except OSError as exc:
            raise EnrolError(f"cannot read {path}: {exc.strerror}") from None
        try:
            pending = fingerprint.self_signed(cert)
        except CorruptData as exc:
            raise EnrolError(f"{path}: {exc}") from None
        published = self._published()
        if not pending:
            if published is not None and fingerprint.issued_by(cert, published.pem):
                return self._note(Outcome(ENROLLED, f"{path} is issued by the published CA", cn))
            if published is None:
                return self._note(Outcome(OTHER_CA, f"{path} is issued by a CA, and no valid CA is published at "
                                                    f"{self.cfg.layout.ca} to compare it with", cn))
            return self._note(Outcome(OTHER_CA, f"{path} is issued by another CA than the published one: "
                                                "the CA guard quarantines it and the node enrols again", cn))
        if published is None:
            return self._note(Outcome(WAITING_CA, f"no valid CA is published at {self.cfg.layout.ca} yet", cn))
        self._trust(published.pem)
        reg = self._registration(cn, cert, published.spki_sha256)
        self._register(reg)
        return self._note(Outcome(REGISTERED, f"registered at {self.cfg.layout.satellite(cn)}; the master "
                                              "accepts and signs it", cn, reg))

    def _published(self) -> cadoc.PublishedCA | None:
        pair = self.store.get(self.cfg.layout.ca, consistent=True)
        if pair is None:
            return None
        try:
            doc = cadoc.decode(pair.value)
        except CorruptData as exc:
            log.warning("the published CA is invalid; not enrolling under it", key=self.cfg.layout.ca, error=str(exc))
            return None
        problem = fingerprint.untrusted_ca(doc.pem, self.clock(), self.cfg.guard.clock_skew)
        if problem:
            log.warning("the published CA is no CA to enrol under", key=self.cfg.layout.ca, error=problem)
            return None
        return doc

    def _trust(self, ca_pem: bytes) -> None:
        """certs/ca.crt := the published CA, kept readable by Icinga 2 (owner of certs/)."""
        path = self.cfg.state_dir / LOCAL_CA
        try:
            if path.read_bytes() == ca_pem:
                return
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise EnrolError(f"cannot read {path}: {exc.strerror}") from None
        try:
            st = os.stat(self.certs)
            write_atomic(path, ca_pem, 0o644)
            if os.geteuid() == 0:
                os.chown(path, st.st_uid, st.st_gid)
        except OSError as exc:
            raise EnrolError(f"cannot write {path}: {exc.strerror}") from None
        log.info("trusting the published CA for enrolment", file=str(path),
                 ca_spki_sha256=fingerprint.spki_sha256(ca_pem))

    def _registration(self, cn: str, cert: bytes, ca_spki: str) -> registration.Registration:
        s = self.settings
        der_sha = hashlib.sha256(fingerprint.load_cert(cert).public_bytes(Encoding.DER)).hexdigest()
        return registration.Registration(
            version=1, cn=cn, zone=s.zone or cn, parent_zone=s.parent_zone, host=s.host, port=s.port,
            key_sha256=fingerprint.spki_sha256(cert), request_sha256=der_sha, ca_spki_sha256=ca_spki,
            node=self.cfg.node, time=datetime.fromtimestamp(self.clock(), timezone.utc).isoformat(timespec="seconds"))

    def _register(self, reg: registration.Registration) -> None:
        key = self.cfg.layout.satellite(reg.cn)
        # A lost check-and-set is re-read, not reported: in one task the sidecar's thread and
        # `statesync enrol --wait` register the same request side by side, and a PUT retried
        # after a lost answer finds its own first write. Either way the key may already hold
        # this very registration.
        for attempt in range(REGISTER_ATTEMPTS):
            pair = self.store.get(key, consistent=True)
            if pair is not None:
                try:
                    if _same(registration.decode(pair.value), reg):
                        return
                except CorruptData:
                    pass  # ours to overwrite: the token may write this key only
            try:
                self.store.put(key, registration.encode(reg), cas=pair.modify_index if pair is not None else 0)
                break
            except CasConflict:
                if attempt == REGISTER_ATTEMPTS - 1:
                    raise
        metrics.enrol_registrations.inc()
        log.warning("registered for enrolment", key=key, cn=reg.cn, zone=reg.zone, parent_zone=reg.parent_zone,
                    key_sha256=reg.key_sha256, request_sha256=reg.request_sha256, ca_spki_sha256=reg.ca_spki_sha256)

    def _note(self, outcome: Outcome) -> Outcome:
        if self.last is None or (self.last.state, self.last.detail) != (outcome.state, outcome.detail):
            level = log.warning if outcome.state == OTHER_CA else log.info
            level("enrolment", state=outcome.state, cn=outcome.cn, detail=outcome.detail)
        metrics.set_enrol_state(outcome.state)
        self.last = outcome
        return outcome

    # -- the sidecar's thread ----------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="enrol", daemon=True)
        self._thread.start()
        log.info("enrolment through Consul started", key=self.cfg.layout.satellites, parent_zone=self.settings.parent_zone)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        seen, next_full = None, 0.0
        while not self._stop.is_set():
            # A stat per second; Consul is asked only when the certificate changed, while a
            # request is pending, and every enrol.interval (a registration lost with Consul).
            stamp = self._stamp()
            now = time.monotonic()
            waiting = self.last is None or self.last.state in (NO_REQUEST, WAITING_CA)
            if waiting or stamp != seen or now >= next_full:
                try:
                    self.step()
                    seen, next_full = stamp, now + self.settings.interval
                except StatesyncError as exc:
                    log.warning("enrolment step failed; retrying", error=str(exc))
                    next_full = now + min(5.0, self.settings.interval)
                    seen = None
                except Exception as exc:  # a bug must not end the thread
                    log.error("enrolment step failed unexpectedly", error=f"{type(exc).__name__}: {exc}")
                    seen = None
            self._stop.wait(PENDING_RECHECK)

    def _stamp(self):
        try:
            st = os.stat(self.cfg.state_dir / node_cert(self.cert_name()))
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns


def _same(a: registration.Registration, b: registration.Registration) -> bool:
    """Equal but for the time: re-writing an unchanged registration would wake the master."""
    return a.__class__(**{**a.__dict__, "time": ""}) == b.__class__(**{**b.__dict__, "time": ""})


def ask_parent(cfg: Config, cn: str) -> bool:
    """Where an ``icinga2`` binary is at hand (an init container of the Icinga image with
    statesync in it): ``icinga2 pki request`` without a ticket, which fetches the certificate
    once the master signed it, so Icinga 2 starts enrolled. False when it cannot be asked."""
    import shutil
    import subprocess
    binary = shutil.which("icinga2", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    parent, trusted = cfg.guard.parent_host, cfg.guard.trusted_parent_file
    if not binary or not parent or not trusted or not os.path.isfile(trusted):
        return False
    host, _, port = parent.rpartition(":")
    state = cfg.state_dir
    argv = [binary, "pki", "request", "--host", host.strip("[]"), "--port", port, "--ticket", "",
            "--key", str(state / node_key(cn)), "--cert", str(state / node_cert(cn)), "--trustedcert", trusted,
            "--ca", str(state / LOCAL_CA)]
    try:
        subprocess.run(argv, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("icinga2 pki request failed", error=str(exc))
    return True


def enrol_once(cfg: Config, wait: bool, timeout: float, sleep=time.sleep) -> Outcome:
    """``statesync enrol``: register a pending request; with ``wait``, until the certificate is
    signed (asking the parent with ``icinga2 pki request`` where that binary is at hand). Return
    the outcome, ``ENROLLED`` or (without ``wait``) ``REGISTERED``; raise EnrolError otherwise."""
    enroller = Enroller(cfg, Store(cfg.consul))
    deadline = time.monotonic() + timeout
    while True:
        outcome = enroller.step()
        if wait and outcome.state == REGISTERED and ask_parent(cfg, outcome.cn):
            outcome = enroller.step()
        if outcome.state == ENROLLED:
            return outcome
        if outcome.state == OTHER_CA:
            raise EnrolError(outcome.detail)
        if not wait:
            if outcome.state == REGISTERED:
                return outcome
            raise EnrolError(outcome.detail)
        if time.monotonic() >= deadline:
            raise EnrolError(f"not enrolled within {timeout:g}s: {outcome.state}: {outcome.detail}")
        sleep(PENDING_RECHECK)
