"""Builds the engine's objects from a validated Config: the one place that knows how they fit."""
from __future__ import annotations

from ..config import Config
from ..consul.store import Store
from ..disk import CA_CERT, LOCAL_CA
from ..errors import CorruptData
from ..repo.repository import Repo
from ..snapshot import chunking
from ..snapshot.keep_rules import Rules
from ..snapshot.manifest import Manifest

# A satellite has no ca/ of its own: the CA it trusts is certs/ca.crt.
CA_FILES = (CA_CERT, LOCAL_CA)


def open_repo(cfg: Config) -> Repo:
    """The node's snapshot repository in Consul, with the sealing and retention the config asks for."""
    sealer = cfg.sealing.sealer if cfg.sealing else None
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep, sealer=sealer,
                seal_manifest=bool(cfg.sealing and cfg.sealing.everything), rules=rules(cfg),
                ca_identity=lambda manifest: ca_identity(cfg, manifest))


def rules(cfg: Config) -> Rules:
    return Rules(keep=cfg.keep, within=cfg.keep_within, hourly=cfg.keep_hourly, daily=cfg.keep_daily)


def ca_identity(cfg: Config, manifest: Manifest) -> str:
    """The SPKI SHA-256 of the CA certificate ``manifest`` holds, read from disk when the file
    there still has the committed content; "" when there is none, or it changed, or does not parse."""
    entries = manifest.find(*(cfg.in_state(rel) for rel in CA_FILES))
    for rel in CA_FILES:
        entry = entries.get(cfg.in_state(rel))
        if entry is None:
            continue
        try:
            data = (cfg.state_dir / rel).read_bytes()
        except OSError:
            return ""
        sealer = cfg.sealing.sealer if cfg.sealing and entry.sealed else None
        if (sealer.address(data) if sealer else chunking.sha256(data)) != entry.sha256:
            return ""
        # Here, not at the top: `statesync restore` opens a repo through this module too, and
        # cryptography's x509 is a tenth of its start-up.
        from ..pki.fingerprint import spki_sha256
        try:
            return spki_sha256(data)
        except CorruptData:
            return ""
    return ""
