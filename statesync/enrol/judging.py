"""What the master knows, gathered into one verdict: the acceptor and ``statesync satellites`` both call ``assess``.

The facts come from Consul (the registrations), Icinga 2's API (the endpoints and zones it runs,
the active package) and the master's disk (the pending requests, the registrations left out);
``verdicts.accept`` judges them. Whoever lacks a fact passes None and gets the verdict that
follows from what is known (the listing says which facts it lacked).
"""
from __future__ import annotations

import os

from ..config import Config
from ..consul.store import Store
from ..disk import CERTS_DIR, node_cert_name
from . import registration
from .verdicts import Evidence, Verdicts, accept


def registrations(cfg: Config, store: Store) -> dict[str, bytes]:
    """Every registration under ``<prefix>/satellites/``: the key's CN -> its raw document."""
    prefix = cfg.layout.satellites
    return {p.key[len(prefix):]: p.value for p in store.get_prefix(prefix) if p.key != prefix}


def reserved_names(cfg: Config, endpoints: dict | None) -> set[str]:
    """Names no registration may take: this master's own, the zones above and beside the
    satellites, and every endpoint some other configuration defines (when ``endpoints`` is known)."""
    try:
        own = node_cert_name(os.listdir(cfg.state_dir / CERTS_DIR), cfg.guard.cert_name, cfg.node)
    except OSError:
        own = cfg.node
    s = cfg.enrol
    names = {own, cfg.node, *s.parent_zones, *s.global_zones, *s.reserved}
    names.update(n for n, e in (endpoints or {}).items() if e.get("package") != s.package)
    return names


def policy(cfg: Config, ca_spki: str, endpoints: dict | None, zones: dict | None) -> registration.Policy:
    s = cfg.enrol
    defined = frozenset(n for n, z in (zones or {}).items() if z.get("package") != s.package)
    return registration.Policy(ca_spki_sha256=ca_spki, allow=s.allow, parent_zones=s.parent_zones,
                               reserved=frozenset(reserved_names(cfg, endpoints)), zones=s.zones,
                               defined_zones=defined)


def evidence(pending, active_files: dict[str, str] | None,
             left_out: dict[str, tuple[str, str]] | None) -> Evidence:
    """The proofs: well-formed pending requests, the active package, the registrations left out."""
    good = [q.request for q in (pending or ()) if q.request is not None]
    return Evidence(proven=frozenset((r.cn, r.spki_sha256, r.fingerprint) for r in good),
                    requested=frozenset(r.cn for r in good),
                    active=registration.accepted_entries(active_files or {}), left_out=dict(left_out or {}))


def assess(cfg: Config, raw: dict[str, bytes], ca_spki: str, endpoints: dict | None, zones: dict | None,
           pending, active_files: dict[str, str] | None, left_out: dict[str, tuple[str, str]] | None) -> Verdicts:
    """The one verdict on every registration."""
    return accept(raw, policy(cfg, ca_spki, endpoints, zones), evidence(pending, active_files, left_out))
