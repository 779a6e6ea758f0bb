"""Builds the engine's objects from a validated Config: the one place that knows how they fit."""
from __future__ import annotations

from ..config import Config
from ..consul.store import Store
from ..repo.repository import Repo


def open_repo(cfg: Config) -> Repo:
    """The node's snapshot repository in Consul, with the sealing the config asks for."""
    sealer = cfg.sealing.sealer if cfg.sealing else None
    return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep, sealer=sealer,
                seal_manifest=bool(cfg.sealing and cfg.sealing.everything))
