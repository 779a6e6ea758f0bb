"""Which files of the tree are sealed, and with what: the policy the scanner applies to each
file it reads (the configured patterns, and any file holding a PEM private key). The sealing
itself, the format, is ``snapshot/crypto``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import PlaintextSecret
from ..snapshot.crypto import Sealer, looks_like_private_key
from .globs import compile_pattern


@dataclass(frozen=True)
class Sealing:
    """Which files are encrypted, and with what. ``sealer`` is None when no key is configured."""

    sealer: Sealer | None
    node: str
    patterns: tuple[str, ...]
    everything: bool = False
    # Without a key, a secret file is refused unless plain text was asked for (allow_plaintext_secrets).
    plaintext_allowed: bool = False

    def is_secret(self, rel: str, data: bytes) -> bool:
        """True for files that must not reach Consul in plain text: the configured
        patterns, and any file that holds a PEM private key."""
        return any(compile_pattern(p).match(rel) for p in self.patterns) or looks_like_private_key(data)

    def wants(self, rel: str, data: bytes) -> bool:
        """True when the file at ``rel`` is to be sealed."""
        return self.sealer is not None and (self.everything or self.is_secret(rel, data))

    def check_plain(self, rel: str, data: bytes) -> bool:
        """For a file that goes up unsealed: True when it is a secret allowed in plain text, False
        when it is no secret. Raises PlaintextSecret for a secret nobody allowed in plain text."""
        if not self.is_secret(rel, data):
            return False
        if not self.plaintext_allowed:
            raise PlaintextSecret(rel)
        return True
