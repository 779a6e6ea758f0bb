"""``statesync satellites``: every registration and how far it got.

registered  in Consul and valid, not (yet) in the active config package
accepted    its Endpoint is in the package and live in Icinga 2
signed      a request with the registered key carries a certificate of the current CA
connected   Icinga 2 reports the endpoint connected
rejected    refused, with the reason (never rendered, never signed)

What cannot be known here shows as unknown: the package and the connection need the API
settings (enrol.api_*), the signatures the master's request directory.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TextIO

from ..config import Config
from ..consul.store import Store
from ..errors import CorruptData, EXIT_OK, StatesyncError
from ..pki import cadoc, fingerprint
from . import registration, requests
from .master import CA_CERT, REQUESTS_DIR, Acceptor, registrations, reserved_names


@dataclass(frozen=True)
class Row:
    cn: str
    zone: str
    parent_zone: str
    key_sha256: str
    state: str
    detail: str
    registered: str


def rows(cfg: Config, store: Store) -> list[Row]:
    raw = registrations(cfg, store)
    ca_spki = _ca_spki(cfg, store)
    endpoints, api_error = None, ""
    if cfg.enrol.api_password:
        try:
            endpoints = Acceptor(cfg, store).api.endpoints()
        except StatesyncError as exc:
            api_error = str(exc)
    policy = registration.Policy(ca_spki_sha256=ca_spki, allow=cfg.enrol.allow, parent_zones=cfg.enrol.parent_zones,
                                 reserved=frozenset(reserved_names(cfg, endpoints)))
    verdicts = registration.accept(raw, policy)
    signed = _signed(cfg)
    out = []
    for r in verdicts.accepted:
        state, detail = "registered", "valid; not in the active config package"
        if endpoints is None:
            state, detail = "registered", f"valid; package and connection unknown ({api_error or 'no enrol.api_* settings'})"
        elif r.cn in endpoints and endpoints[r.cn].get("package") == cfg.enrol.package:
            state, detail = "accepted", "Endpoint and Zone live"
            if endpoints[r.cn].get("connected"):
                state, detail = "connected", "connected to this master"
        if state in ("registered", "accepted") and signed is not None and (r.cn, r.key_sha256) in signed:
            state, detail = "signed", "certificate signed; waiting for the satellite to fetch it and connect"
        out.append(Row(r.cn, r.zone, r.parent_zone, r.key_sha256, state, detail, r.time))
    for rej in verdicts.rejected:
        try:
            reg = registration.decode(raw.get(rej.key, b""))
            # A refused document's fields are whatever its writer put there: shown escaped, never raw.
            zone, parent, key, when = (f if registration.valid_name(f) else registration.shown(f)
                                       for f in (reg.zone, reg.parent_zone, reg.key_sha256, reg.time))
        except CorruptData:
            zone = parent = key = when = ""
        out.append(Row(rej.key, zone, parent, key, "rejected", rej.reason, when))
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


def _signed(cfg: Config) -> set | None:
    directory = cfg.state_dir / REQUESTS_DIR
    if not directory.is_dir():
        return None
    out = set()
    for req in requests.scan(directory):
        if req.request is None or not req.response_pem:
            continue
        try:
            if fingerprint.spki_sha256(req.response_pem) == req.request.spki_sha256:
                out.add((req.request.cn, req.request.spki_sha256))
        except CorruptData:
            continue
    return out


def print_rows(cfg: Config, out: TextIO, as_json: bool) -> int:
    found = rows(cfg, Store(cfg.consul))
    if as_json:
        json.dump([asdict(r) for r in found], out, indent=2)
        out.write("\n")
        return EXIT_OK
    if not found:
        print(f"no satellite registered under {cfg.layout.satellites}", file=out)
        return EXIT_OK
    print(f"{'CN':<28} {'ZONE':<20} {'PARENT':<12} {'KEY':<16} {'STATE':<10} DETAIL", file=out)
    for r in found:
        print(f"{r.cn[:28]:<28} {r.zone[:20]:<20} {r.parent_zone[:12]:<12} {r.key_sha256[:16]:<16} "
              f"{r.state:<10} {r.detail}", file=out)
    return EXIT_OK
