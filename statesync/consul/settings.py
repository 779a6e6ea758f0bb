"""How statesync reaches Consul, and the size limits of what it sends: plain values, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field

TXN_MAX_OPS_DEFAULT = 64
# Consul's txn_max_req_len is 512 KiB for the whole JSON body; keep headroom for the envelope.
TXN_MAX_BODY_DEFAULT = 480 * 1024
# Values above this go by plain PUT: inside a transaction they cost base64 and JSON twice.
PUT_THRESHOLD = 96 * 1024
# Values read by name per transaction: an answer this size takes well under a second
# even on a slow link, far inside the default 10 s request timeout.
READ_BATCH_BYTES = 4 * 1024 * 1024
# A fenced value must travel inside a transaction (a plain PUT cannot carry a check-session),
# so it must fit one transaction body once base64-encoded, with room for the fence.
FENCED_VALUE_MAX = TXN_MAX_BODY_DEFAULT * 3 // 4 - 1024


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    # The prefix a reverse proxy serves Consul's API under ("/consul"), as CONSUL_HTTP_ADDR's path gives it.
    path: str = ""

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL: IPv6 literals in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.port}{self.path}"


@dataclass(frozen=True)
class ConsulSettings:
    """How to reach Consul. ``token`` is never logged or shown."""

    endpoints: tuple[Endpoint, ...] = (Endpoint("http", "127.0.0.1", 8500),)
    token: str = field(default="", repr=False)
    # HTTP basic auth for a reverse proxy in front of Consul, "user:password" (CONSUL_HTTP_AUTH).
    auth: str = field(default="", repr=False)
    cacert: str = ""
    # A directory of PEM CA certificates, every file of it trusted (as the consul CLI reads CONSUL_CAPATH).
    capath: str = ""
    # The name Consul's certificate is verified against and sent as SNI; "": the address's host.
    tls_server_name: str = ""
    client_cert: str = ""
    client_key: str = ""
    verify: bool = True
    timeout: float = 10.0
    txn_max_ops: int = TXN_MAX_OPS_DEFAULT
    txn_max_body: int = TXN_MAX_BODY_DEFAULT


@dataclass(frozen=True)
class LockSettings:
    """The ``lock.*`` settings: whether to take the writer lock, its session TTL and lock-delay (seconds)."""

    enabled: bool = True
    ttl: float = 15.0
    delay: float = 5.0
