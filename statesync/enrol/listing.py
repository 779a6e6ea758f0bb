"""``statesync satellites``: every registration and how far it got, by the acceptor's own verdict.

registered  valid, not (yet) in the active config package: waiting for its certificate request,
            or accepted and about to be staged
accepted    its Endpoint is in the package and live in Icinga 2
signed      a request with the registered key carries a certificate of the current CA
connected   Icinga 2 reports the endpoint connected
rejected    refused, with the reason (never rendered, never signed); also a registration left
            out because Icinga 2's config check failed with it

The verdict is ``judging.assess``, the acceptor's: the same facts give the same answer. What
cannot be known here shows as unknown: the package, the zones and the connection need the API
settings (enrol.api_*), the proofs and signatures the master's request directory. LIVE ZONE is
the zone Icinga 2 runs the endpoint in, whatever the registration says.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..consul.store import Store
from ..disk import CA_CERT, REQUESTS_DIR
from ..errors import CorruptData, StatesyncError
from ..pki import cadoc, fingerprint
from . import isolation, registration, requests
from .icinga_api import IcingaApi
from .judging import assess, registrations


@dataclass(frozen=True)
class Row:
    cn: str
    zone: str
    parent_zone: str
    key_sha256: str
    state: str
    detail: str
    registered: str
    live_zone: str = ""


def _facts(cfg: Config):
    """(endpoints, zones, active package files, why unknown) from Icinga 2's API."""
    s = cfg.enrol
    if not s.api_password:
        return None, None, None, "no enrol.api_* settings"
    try:
        with IcingaApi(s.api_url, s.api_user, s.api_password, s.api_cacert or str(cfg.state_dir / CA_CERT),
                       s.api_server_name, timeout=10.0) as api:
            return api.endpoints(), api.zones(), api.active_files(s.package) or {}, ""
    except StatesyncError as exc:
        return None, None, None, str(exc)


def _pending(cfg: Config):
    directory = cfg.state_dir / REQUESTS_DIR
    if not directory.is_dir():
        return None
    try:
        return requests.scan(directory)
    except OSError:
        return None


def rows(cfg: Config, store: Store) -> list[Row]:
    raw = registrations(cfg, store)
    endpoints, zones, active, api_error = _facts(cfg)
    pending = _pending(cfg)
    verdicts = assess(cfg, raw, _ca_spki(cfg, store), endpoints, zones, pending, active,
                      isolation.load_left_out(cfg.root))
    unknown = [why for why, lacking in ((f"package and connection unknown: {api_error}", endpoints is None),
                                        ("no request directory here", pending is None)) if lacking]
    live_zone = {cn: name for name, z in (zones or {}).items() for cn in z["endpoints"]}
    signed = _signed(pending)
    out = []
    for r, waits in [(r, False) for r in verdicts.accepted] + [(r, True) for r in verdicts.waiting]:
        state = "registered"
        detail = "valid; waits for its certificate request" if waits else "accepted; not in the active config package yet"
        if unknown:
            detail = f"valid alone; the verdict is unknown ({'; '.join(unknown)})"
        elif not waits and r.cn in endpoints and endpoints[r.cn].get("package") == cfg.enrol.package:
            state, detail = "accepted", "Endpoint and Zone live"
            if endpoints[r.cn].get("connected"):
                state, detail = "connected", "connected to this master"
        if state in ("registered", "accepted") and not waits and (r.cn, r.key_sha256) in signed:
            state, detail = "signed", "certificate signed; waiting for the satellite to fetch it and connect"
        out.append(Row(r.cn, r.zone, r.parent_zone, r.key_sha256, state, detail, r.time, live_zone.get(r.cn, "")))
    for rej in verdicts.rejected:
        try:
            reg = registration.decode(raw.get(rej.key, b""))
            # A refused document's fields are whatever its writer put there: shown escaped, never raw.
            zone, parent, key, when = (f if registration.valid_name(f) else registration.shown(f)
                                       for f in (reg.zone, reg.parent_zone, reg.key_sha256, reg.time))
        except CorruptData:
            zone = parent = key = when = ""
        live = live_zone.get(rej.key, "") if registration.valid_name(rej.key) else ""
        out.append(Row(rej.key, zone, parent, key, "rejected", rej.reason, when, live))
    return sorted(out, key=lambda row: row.cn)


def _ca_spki(cfg: Config, store: Store) -> str:
    """The CA registrations must name: the master's own, else the published one."""
    try:
        return fingerprint.spki_sha256((cfg.state_dir / CA_CERT).read_bytes())
    except (OSError, CorruptData):
        pass
    pair = store.get(cfg.layout.ca)
    try:
        return cadoc.decode(pair.value).spki_sha256 if pair is not None else ""
    except CorruptData:
        return ""


def _signed(pending) -> set:
    out = set()
    for req in pending or ():
        if req.request is None or not req.response_pem:
            continue
        try:
            if fingerprint.spki_sha256(req.response_pem) == req.request.spki_sha256:
                out.add((req.request.cn, req.request.spki_sha256))
        except CorruptData:
            continue
    return out
