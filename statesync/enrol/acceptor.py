"""The master's side of enrolment: accept what is registered, then sign what was accepted.

One pass (``reconcile``) reads every registration under ``<prefix>/satellites/`` and judges
it against the master's current CA and the policy (``registration.accept``); renders the
accepted ones as Endpoint and Zone objects and stages them into a config package of their
own, only when the text changed, because every reload drops all cluster connections for
seconds; confirms the stage (a 200 reply is no success: the status file is); and only then
signs the pending requests whose CN, public key and fingerprint match an accepted
registration and whose endpoint is live, because a master without the Endpoint refuses the
connection that would fetch the certificate. A failed stage leaves Icinga 2 on the running
config; it shows in health and in ``statesync_enrol_stage_failed``.

Passes run on a Consul blocking query over the registrations, on a poll of the request
directory (it may not exist before the first request, and Icinga rewrites files there on
every retry) and every ``enrol.interval`` seconds, one at a time; a burst of changes settles
first (``settle``), so that what arrived together is staged together, with one reload.

Only the master beside the CA accepts: without ``ca/ca.key`` a pass stands by (docs/HA.md).
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from .. import metrics
from ..config import Config
from ..consul.backoff import Backoff
from ..consul.store import Store
from ..consul.watch import Watch, prefix_query
from ..disk import CA_CERT, CA_KEY, REQUESTS_DIR
from ..errors import CorruptData, StatesyncError
from ..pki import fingerprint, signing
from . import isolation, registration, requests, settle
from .icinga_api import IcingaApi
from .judging import assess, registrations
from .verdicts import Evidence, incumbent, left_out_reason, standby_reason

log = structlog.get_logger(__name__)

WATCH_WAIT = 55.0
REQUEST_POLL = 0.5
FAILING_FOR = 60.0  # seconds of failing passes before /healthz says so
STANDBY_RECHECK = 2.0  # seconds between passes while standing by: one stat() each, and the CA may arrive
# What an empty acceptance stages, so that deleting the last registration un-accepts it too.
NO_REGISTRATION = "no accepted registration for this CN"
EMPTY_NOTE = "# Managed by statesync (enrolment through Consul): no satellite is accepted.\n"


@dataclass
class AcceptorState:
    """What the last pass saw and did; read by health, tests and ``statesync satellites``."""

    passes: int = 0
    accepted: tuple = ()
    rejected: tuple = ()
    live: frozenset = frozenset()
    signed: list = field(default_factory=list)  # (cn, fingerprint) in order
    stage_error: str = ""
    error: str = ""
    unexpected: str = ""  # a pass failed by a bug, not by Consul or Icinga being away
    failing_since: float | None = None  # monotonic time of the first of the passes failing since
    active_fingerprint: str = ""
    waiting: tuple = ()
    left_out: dict = field(default_factory=dict)  # cn -> (digest, reason): Icinga's check failed with it
    standby: str = ""  # why this master accepts nobody (no CA key beside it), "" while it accepts


class Acceptor:
    def __init__(self, cfg: Config, store: Store, api: IcingaApi | None = None):
        self.cfg, self.store, s = cfg, store, cfg.enrol
        self.settings = s
        self.api = api or IcingaApi(s.api_url, s.api_user, s.api_password,
                                    s.api_cacert or str(cfg.state_dir / CA_CERT), s.api_server_name,
                                    timeout=10.0)
        self.requests_dir = cfg.state_dir / REQUESTS_DIR
        self.state = AcceptorState()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pass = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._told: set = set()
        self._active: dict[str, str] | None = None  # the active stage's files, once read
        self._left_out_read = False
        self._access_checked = False

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        for name, target in (("enrol-watch", self._watch), ("enrol-requests", self._poll_requests),
                             ("enrol-work", self._work)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._wake.set()
        log.info("accepting satellites through Consul", key=self.cfg.layout.satellites, package=self.settings.package,
                 api=self.settings.api_url, allow=list(self.settings.allow), parent_zones=list(self.settings.parent_zones))

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            # The watcher may sit in a blocking query; it is a daemon thread that leaves at its next wake-up.
            t.join(timeout if t.name != "enrol-watch" else 0.2)
        self._threads = []

    def problem(self) -> str:
        """"" when accepting works; otherwise why not (for /healthz)."""
        st, parts = self.state, []
        if st.unexpected:
            parts.append(f"enrolment: the last pass failed unexpectedly: {st.unexpected}")
        elif st.error and st.failing_since is not None and time.monotonic() - st.failing_since > FAILING_FOR:
            # a reload makes the API drop out for seconds; a minute is a setting or a permission
            parts.append(f"enrolment: every pass has failed for {time.monotonic() - st.failing_since:.0f}s: {st.error}")
        if st.stage_error:
            parts.append(f"enrolment: the last stage of {self.settings.package} failed: {st.stage_error}")
        if st.left_out:
            names = ", ".join(registration.shown(cn) for cn in sorted(st.left_out))
            parts.append(f"enrolment: left out because Icinga 2's config check fails with them: {names} "
                         f"(see statesync satellites)")
        return "; ".join(parts)

    def _watch(self) -> None:
        Watch(prefix_query(self.store, self.cfg.layout.satellites, WATCH_WAIT), lambda _pairs, _first: self._wake.set(),
              self._stop, Backoff(0.25, 5.0), "the registrations", self.cfg.layout.satellites).run()

    def _poll_requests(self) -> None:
        seen = None
        while not self._stop.wait(REQUEST_POLL):
            stamp = _dir_stamp(self.requests_dir)
            if stamp != seen:
                seen = stamp
                self._wake.set()

    def note(self) -> str:
        """What /healthz says beside "healthy": why this master stands by, if it does."""
        return f"enrolment: {self.state.standby}" if self.state.standby else ""

    def _work(self) -> None:
        next_periodic = time.monotonic() + self.settings.interval
        while not self._stop.is_set():
            if self._wake.wait(max(0.0, next_periodic - time.monotonic())) and not self._stop.is_set():
                self._settle()
            if self._stop.is_set():
                return
            # Standing by, look again soon: the CA arrives with node setup or a restore.
            next_periodic = time.monotonic() + (STANDBY_RECHECK if self.state.standby else self.settings.interval)
            try:
                self.reconcile()
            except StatesyncError as exc:
                self._once(("pass", str(exc)), log.warning, "enrolment pass failed; retrying", error=str(exc))
                self.state.error = str(exc)
                if self.state.failing_since is None:
                    self.state.failing_since = time.monotonic()
                self._stop.wait(1.0)
                self._wake.set()
            except Exception as exc:  # a bug must not end the thread, nor hide behind a healthy /healthz
                self.state.unexpected = f"{type(exc).__name__}: {exc}"[:300]
                if self.state.failing_since is None:
                    self.state.failing_since = time.monotonic()
                log.error("enrolment pass failed unexpectedly", error=self.state.unexpected)
                self._stop.wait(5.0)

    def _settle(self) -> None:
        """Let a burst of registrations and requests settle into one pass, one stage (``settle``)."""
        first = last = time.monotonic()
        self._wake.clear()
        while not self._stop.is_set() and (delay := settle.wait_more(first, last, time.monotonic())) > 0:
            if self._wake.wait(delay):
                self._wake.clear()
                last = time.monotonic()
        self._wake.clear()

    # -- one pass -------------------------------------------------------------------

    def reconcile(self) -> AcceptorState:
        with self._pass:
            return self._reconcile()

    def _reconcile(self) -> AcceptorState:
        st = self.state
        st.passes += 1
        if self._stands_by():
            return st
        ca_pem = _read(self.cfg.state_dir / CA_CERT)
        if ca_pem is None:
            raise StatesyncError(f"{self.cfg.state_dir / CA_CERT} does not exist: this node has no CA to sign with")
        ca_spki = fingerprint.spki_sha256(ca_pem)
        raw = registrations(self.cfg, self.store)
        if not self._access_checked:
            # A missing permission, named once before any work, not first met mid-stage.
            self.api.check_access()
            self._access_checked = True
        endpoints, zones = self.api.endpoints(), self.api.zones()
        if self._active is None:
            self._active = self.api.active_files(self.settings.package)
        if not self._left_out_read:
            st.left_out, self._left_out_read = isolation.load_left_out(self.cfg.root), True
        pending = requests.scan(self.requests_dir)
        verdicts = assess(self.cfg, raw, ca_spki, endpoints, zones, pending, self._active, st.left_out)
        self._forget_left_out(verdicts)
        for r in verdicts.rejected:
            self._once(("registration", r.key, r.reason), log.warning, "registration refused",
                       satellite=registration.shown(r.key), reason=r.reason, kind="registration")
        for r in verdicts.waiting:
            self._once(("registration", r.cn, "waiting", r.key_sha256), log.info,
                       "registration waits for its certificate request", satellite=registration.shown(r.cn))
        chosen = list(verdicts.accepted)
        st.waiting = verdicts.waiting

        # A failed stage leaves Icinga on the running config; signing still follows what is live
        # there, so one bad registration does not stop the satellites already accepted.
        if self._stage(chosen):
            endpoints = self.api.endpoints()
        left = set(st.left_out)
        chosen = [r for r in chosen if r.cn not in left]
        st.accepted = tuple(chosen)
        st.rejected = verdicts.rejected + tuple(registration.Rejection(cn, left_out_reason(why))
                                                for cn, (_, why) in sorted(st.left_out.items())
                                                if cn in {r.cn for r in verdicts.accepted})
        metrics.enrol_accepted.set(len(chosen))
        accepted = {r.cn: r for r in chosen}
        st.live = frozenset(n for n, e in endpoints.items() if e.get("package") == self.settings.package
                            and n in accepted)
        self._sign(accepted, st.live, pending)
        st.error = st.unexpected = ""
        st.failing_since = None
        self._told = {k for k in self._told if k[0] != "pass"}
        return st

    def _stands_by(self) -> bool:
        """Decide, at every pass, whether this master is the one beside the CA (``standby_reason``)."""
        st = self.state
        why = standby_reason((self.cfg.state_dir / CA_KEY).exists(), CA_KEY)
        if why and not st.standby:
            log.info("not accepting satellites: " + why, key_file=str(self.cfg.state_dir / CA_KEY))
        elif st.standby and not why:
            log.info("the CA key is here now: accepting and signing satellites",
                        key_file=str(self.cfg.state_dir / CA_KEY))
        st.standby = why
        if why:  # not failing: a second master has nothing to do here
            st.error = st.unexpected = ""
            st.failing_since = None
        return bool(why)

    def _forget_left_out(self, verdicts) -> None:
        """Keep a left-out note only while its registration is unchanged (refused for it)."""
        st = self.state
        refused = set(verdicts.rejected)
        kept = {cn: v for cn, v in st.left_out.items()
                if registration.Rejection(cn, left_out_reason(v[1])) in refused}
        if kept != st.left_out:
            st.left_out = kept
            self._save_left_out()

    def _save_left_out(self) -> None:
        try:
            isolation.save_left_out(self.cfg.root, self.state.left_out)
        except OSError as exc:
            log.warning("cannot record the registrations left out", error=str(exc))

    def _files(self, accepted) -> dict[str, str]:
        files = registration.render(accepted)
        return files or {f"zones.d/{self.settings.parent_zones[0]}/statesync-satellites.conf": EMPTY_NOTE}

    def _try(self, files: dict[str, str], activate: bool) -> tuple[str, object]:
        pkg = self.settings.package
        stage = self.api.stage(pkg, files, activate=activate)
        return stage, self.api.wait_stage(pkg, stage, self.settings.stage_timeout)

    def _validate(self, accepted) -> tuple[bool, str]:
        _, result = self._try(self._files(accepted), activate=False)
        return result.ok, "" if result.ok else _last_line(result.log_tail)

    def _stage(self, accepted: list) -> bool:
        """Bring the package to ``accepted`` when its text differs; True when a new stage went live
        (Icinga reloaded: the endpoints read before are stale), False otherwise. When the stage
        fails, the newcomers Icinga's check fails with are left out (``isolation``) and the rest
        staged; ``accepted`` loses those left out."""
        files = self._files(accepted)
        fp = registration.fingerprint_of(files)
        st, pkg = self.state, self.settings.package
        if fp == st.active_fingerprint:
            return False
        active = self._active = self.api.active_files(pkg)
        if active is not None and registration.fingerprint_of(active) == fp:
            st.active_fingerprint, st.stage_error = fp, ""
            metrics.enrol_stage_failed.set(0)
            return False
        if active is None and not accepted:
            st.active_fingerprint = fp  # nothing accepted and nothing staged: no reload for nothing
            return False
        self.api.ensure_package(pkg)
        stage, result = self._try(files, activate=True)
        if not result.ok:
            stage, result, files = self._isolate(accepted, active, stage, result)
        try:
            if result is None:  # what is left after isolating is what runs: nothing to reload
                st.active_fingerprint, st.stage_error = fp, ""
                metrics.enrol_stage_failed.set(0)
                return False
            if not result.ok:
                st.stage_error = f"stage {stage}: {_last_line(result.log_tail)}"
                st.active_fingerprint = fp  # the same text would fail again: wait for a change
                metrics.enrol_stages.labels(result="failed").inc()
                metrics.enrol_stage_failed.set(1)
                log.error("Icinga 2 refused the accepted satellites' config; it keeps running the previous one",
                          package=pkg, stage=stage, log_tail=result.log_tail[-2000:])
                return False
        finally:
            try:
                self.api.delete_inactive_stages(pkg, keep={stage})
            except StatesyncError as exc:
                log.warning("cannot delete old stages", package=pkg, error=str(exc))
        st.active_fingerprint, st.stage_error, self._active = fp, "", files
        metrics.enrol_stages.labels(result="ok").inc()
        metrics.enrol_stage_failed.set(0)
        left = set(st.left_out)
        log.warning("accepted satellites staged", package=pkg, stage=stage,
                    satellites=[r.cn for r in accepted if r.cn not in left])
        self._wait_live({r.cn for r in accepted if r.cn not in left})
        return True

    def _isolate(self, accepted: list, active, stage: str, result):
        """After a failed stage: leave out the newcomers Icinga's check fails with and stage the
        rest. Returns (stage, result, files): result None when the rest is what runs already."""
        st = self.state
        was = Evidence(active=registration.accepted_entries(active or {}))
        base = [r for r in accepted if incumbent(r, was)]
        newcomers = sorted((r for r in accepted if not incumbent(r, was)), key=lambda r: (r.time, r.cn))
        if not newcomers:
            return stage, result, None
        why = _last_line(result.log_tail)
        found = isolation.isolate(base, newcomers, self._validate, why)
        log.warning("a stage failed: looking for the registrations Icinga 2's config check fails with",
                    failed=why, newcomers=[r.cn for r in newcomers], tries=found.tries,
                    left_out=[r.cn for r, _ in found.bad], untried=[r.cn for r in found.untried])
        if not found.base_ok or not found.bad:
            return stage, result, None
        for r, reason in found.bad:
            st.left_out[r.cn] = (registration.digest(r), reason)
            self._told.add(("registration", r.cn, left_out_reason(reason)))  # logged here, not again as refused
            log.error("registration left out", kind="registration", satellite=registration.shown(r.cn),
                      zone=registration.shown(r.zone), reason=f"Icinga 2's config check fails with it: {reason}")
            metrics.enrol_rejected.labels(kind="registration").inc()
        self._save_left_out()
        files = self._files(base + list(found.good))
        if active is not None and registration.fingerprint_of(active) == registration.fingerprint_of(files):
            return stage, None, files
        stage, result = self._try(files, activate=True)
        return stage, result, files

    def _wait_live(self, names: set[str]) -> None:
        deadline = time.monotonic() + self.settings.stage_timeout
        while names and not self._stop.is_set() and time.monotonic() < deadline:
            live = {n for n in names if self.api.endpoint_live(n)}
            if live == names:
                return
            self._stop.wait(0.2)

    def _sign(self, accepted: dict, live: frozenset, pending) -> None:
        for req in pending:
            if req.error:
                self._once(("request", req.fingerprint, req.error), log.warning, "certificate request refused",
                           request=req.fingerprint, reason=req.error, kind="request")
                continue
            r = req.request
            why = _refusal(r, accepted.get(r.cn))
            if not why and r.cn not in live:
                continue  # accepted, and signed on the pass after its Endpoint is live
            if why == NO_REGISTRATION:  # early (registered in a moment) or forged: never signed either way
                self._once(("request", req.fingerprint, why), log.info, "certificate request waits for a registration",
                           request=req.fingerprint, cn=r.cn)
                continue
            if why:
                self._once(("request", req.fingerprint, why), log.warning, "certificate request not signed",
                           request=req.fingerprint, cn=r.cn, reason=why, kind="request")
                continue
            ca_pem = _read(self.cfg.state_dir / CA_CERT)  # re-read: the CA may have been renewed meanwhile
            if ca_pem is None:
                raise StatesyncError(f"{self.cfg.state_dir / CA_CERT} vanished")
            if req.response_pem and _valid_response(req.response_pem, r, ca_pem):
                continue
            key_pem = _read(self.cfg.state_dir / CA_KEY)
            if key_pem is None:
                raise StatesyncError(f"{self.cfg.state_dir / CA_KEY} does not exist: cannot sign")
            pem = signing.sign(r, ca_pem, key_pem)
            try:
                written = requests.write_response(req.path, req.fingerprint, pem)
            except OSError as exc:
                raise StatesyncError(f"cannot write the signed certificate into {req.path}: {exc.strerror}") from None
            if written:
                metrics.enrol_signed.inc()
                self.state.signed.append((r.cn, req.fingerprint))
                log.warning("certificate request signed", cn=r.cn, request=req.fingerprint, key_sha256=r.spki_sha256)

    def _once(self, key: tuple, level, event: str, **fields) -> None:
        """Log (and count) a refusal or failure once, not on every pass."""
        if key in self._told:
            return
        self._told.add(key)
        if fields.get("kind"):
            metrics.enrol_rejected.labels(kind=fields["kind"]).inc()
        level(event, **fields)


def _refusal(r: signing.RequestCert, reg) -> str:
    if reg is None:
        return NO_REGISTRATION
    if reg.key_sha256 != r.spki_sha256:
        return "its public key is not the registered one (a stale or forged request)"
    if reg.request_sha256 != r.fingerprint:
        return "its fingerprint is not the registered request"
    return ""


def _valid_response(pem: bytes, r: signing.RequestCert, ca_pem: bytes) -> bool:
    try:
        return fingerprint.spki_sha256(pem) == r.spki_sha256 and fingerprint.issued_by(pem, ca_pem)
    except CorruptData:
        return False


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _dir_stamp(path: Path):
    try:
        return tuple(sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns) for e in os.scandir(path)))
    except OSError:
        return None


def _last_line(text: str) -> str:
    """The line of startup.log that says why: the first critical one that is not the closing
    "Config validation failed" of critical/cli."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    crit = [ln for ln in lines if "critical/" in ln and "critical/cli" not in ln]
    line = (crit[:1] or lines[-1:] or ["(no startup.log)"])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line)[:300]  # without its time: the same failure reads the same
