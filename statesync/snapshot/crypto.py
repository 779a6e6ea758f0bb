"""Client-side encryption of chunks with AES-256-GCM. Pure, but for the random nonce.

One 32-byte master key (``statesync keygen``) yields, through HKDF, an encryption
key, an addressing key and a public key id. A sealed chunk is addressed by
HMAC-SHA256(addressing key, plaintext) instead of its plain SHA-256, so neither
its name nor the manifest reveals a digest of a private key, and a plain and a
sealed copy of the same bytes never share a key in Consul. The associated data
binds each ciphertext to its node and its address: a chunk swapped for another,
or copied in from another node's prefix, fails authentication.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import CorruptData, KeyFormatError

KEY_PREFIX = "statesync-key-v1:"
MAGIC = b"SSE1"
_NONCE = 12
_PEM_PRIVATE = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def generate_key() -> bytes:
    return os.urandom(32)


def format_key(key: bytes) -> str:
    """The key as one line of text, as ``keygen`` writes it."""
    return KEY_PREFIX + base64.b64encode(key).decode()


def parse_key(text: str | bytes) -> bytes:
    """Parse ``statesync-key-v1:<base64 of 32 bytes>`` (text, or a key file's bytes); raise KeyFormatError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise KeyFormatError("not a statesync key (not ASCII text)") from None
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise KeyFormatError(f"not a statesync key (expected it to start with {KEY_PREFIX!r})")
    try:
        key = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
    except ValueError:
        raise KeyFormatError("the key is not valid base64") from None
    if len(key) != 32:
        raise KeyFormatError(f"the key must be 32 bytes, got {len(key)}")
    return key


def looks_like_private_key(data: bytes) -> bool:
    """True when ``data`` holds a PEM private key, whatever the file is called."""
    return bool(_PEM_PRIVATE.search(data[:1 << 20]))


def _derive(master: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"statesync", info=label).derive(master)


class Sealer:
    """Seals and opens chunks under one master key. Never logs or shows the key."""

    def __init__(self, master_key: bytes):
        self._aead = AESGCM(_derive(master_key, b"statesync/1 encryption"))
        self._mac = _derive(master_key, b"statesync/1 addressing")
        self.key_id = _derive(master_key, b"statesync/1 key id")[:8].hex()

    def __repr__(self) -> str:
        return f"Sealer(key_id={self.key_id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sealer) and other.key_id == self.key_id

    def __hash__(self) -> int:
        return hash(self.key_id)

    def address(self, data: bytes) -> str:
        """The content address of ``data`` when sealed."""
        return hmac.new(self._mac, data, hashlib.sha256).hexdigest()

    def hasher(self) -> "hmac.HMAC":
        """A hash object giving ``address`` of the bytes fed to it, for content read in pieces."""
        return hmac.new(self._mac, digestmod=hashlib.sha256)

    @staticmethod
    def _aad(node: str, address: str) -> bytes:
        return b"statesync/1\x00" + node.encode() + b"\x00" + address.encode()

    def seal(self, node: str, address: str, data: bytes) -> bytes:
        """Encrypt ``data`` stored at ``address`` below ``node``."""
        nonce = os.urandom(_NONCE)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, self._aad(node, address))

    def open(self, node: str, address: str, blob: bytes) -> bytes:
        """Decrypt and verify a sealed chunk; raise CorruptData when anything is off."""
        data = self.decrypt(node, address, blob)
        if not hmac.compare_digest(self.address(data), address):
            raise CorruptData(f"chunk {address[:16]}… decrypts to content of another address")
        return data

    def decrypt(self, node: str, address: str, blob: bytes) -> bytes:
        """Decrypt and authenticate a sealed chunk sealed for ``address`` below ``node``, without
        checking that the plaintext has that address: a compressed chunk's plaintext is its
        stored form, whose address the reader checks once decompressed (``codec.decode``)."""
        if len(blob) < len(MAGIC) + _NONCE + 16 or not blob.startswith(MAGIC):
            raise CorruptData(f"chunk {address[:16]}… is not a sealed chunk")
        nonce = blob[len(MAGIC):len(MAGIC) + _NONCE]
        try:
            data = self._aead.decrypt(nonce, blob[len(MAGIC) + _NONCE:], self._aad(node, address))
        except InvalidTag:
            raise CorruptData(f"chunk {address[:16]}… fails authentication (wrong key, or swapped or "
                              f"tampered with)") from None
        return data
