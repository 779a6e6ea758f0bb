"""python-consul2's client, on our transport, with what the library lacks kept in named places.

``Client`` is a ``consul.base.Consul`` whose endpoints (``kv``, ``txn``, ``session``,
``status``) are the library's own. Three things are ours, each in one class below, each
saying what it adds: the constructor (``Client``), transaction bodies (``Txn``) and session
creation (``Session``).
"""
from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Sequence

from .library import consul_base
from .settings import ConsulSettings
from .transport import KeepAliveTransport, Stats


@dataclass(frozen=True)
class Op:
    """One transaction operation: ``verb`` as in Consul's /v1/txn KV API."""

    verb: str
    key: str
    value: bytes | None = None
    index: int | None = None
    session: str | None = None

    def body_size(self) -> int:
        value = 4 * math.ceil(len(self.value) / 3) if self.value else 0
        return value + len(self.key.encode()) + 96


class Client(consul_base.Consul):
    """The library's client, built from statesync's ``ConsulSettings``.

    What the library's constructor lacks: it reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and
    CONSUL_HTTP_SSL* from the environment itself, after the caller's arguments, and raises on
    an IPv6 CONSUL_HTTP_ADDR. statesync interprets those variables in ``config``, in its own
    order of precedence (defaults, file, environment, flags) and with several addresses, so
    this constructor sets up only what the library's endpoints use: ``http``, ``token``,
    ``dc`` and ``consistency``.
    """

    def __init__(self, settings: ConsulSettings, stats: Stats):
        self.settings = settings
        self.stats = stats
        self.token = settings.token or None
        self.dc = None
        self.consistency = "default"
        self.scheme = settings.endpoints[0].scheme
        self.http = self.http_connect()
        self.kv = consul_base.Consul.KV(self)
        self.status = consul_base.Consul.Status(self)
        self.txn = Txn(self)
        self.session = Session(self)

    def http_connect(self, *args, **kwargs) -> KeepAliveTransport:
        return KeepAliveTransport(self.settings, self.stats)


class Txn(consul_base.Consul.Txn):
    """The library's /v1/txn endpoint; ``apply`` adds what its ``put(payload)`` lacks.

    ``put`` runs the whole payload, values included, through ``json.dumps``: 0.6 ms of client
    time per 480 KiB body here, about 6 % of a bulk backup. ``apply`` takes ``Op`` objects and
    builds the same JSON as bytes (a value's base64 never needs escaping), and sends it as
    ``put`` does. Consul's per-transaction limits (64 operations, 512 KiB of JSON in 1.8) are
    not the library's concern either: the store fills transactions up to them.
    """

    def apply(self, ops: Sequence[Op], consistency: str | None = None) -> dict:
        headers = {"X-Consul-Token": self.agent.token} if self.agent.token else {}
        # Consul honours ?consistent / ?stale on a transaction of reads only.
        params = [(consistency, "1")] if consistency in ("consistent", "stale") else None
        return self.agent.http.put(consul_base.CB.json(), path="/v1/txn", params=params, headers=headers,
                                   data=txn_body(ops))


class Session(consul_base.Consul.Session):
    """The library's /v1/session endpoints; ``create`` adds what the library's lacks.

    The library asserts 10 s <= ttl <= 24 h, the bounds of Consul's *default*
    ``session_ttl_min``: that refuses a TTL a server with a lower ``session_ttl_min`` accepts,
    and the check vanishes under ``python -O``. Here Consul, which knows its own bounds, checks
    the TTL, and both durations go in whole milliseconds.
    """

    def create(self, name: str, ttl: float, lock_delay: float, behavior: str = "release",
               checks: Sequence[str] = ()) -> str:
        headers = {"X-Consul-Token": self.agent.token} if self.agent.token else {}
        data = json.dumps({"Name": name, "TTL": duration(ttl), "LockDelay": duration(lock_delay),
                           "Behavior": behavior, "Checks": list(checks)})
        return self.agent.http.put(consul_base.CB.json(is_id=True), path="/v1/session/create",
                                   headers=headers, data=data)


def txn_body(ops: Sequence[Op]) -> bytes:
    """The /v1/txn body of ``ops`` (``[{"KV": {"Verb": ..., "Key": ..., "Value": base64, ...}}]``), built as bytes."""
    parts: list[bytes] = [b"["]
    for i, op in enumerate(ops):
        parts += [b',{"KV":{"Verb":' if i else b'{"KV":{"Verb":', json.dumps(op.verb).encode(),
                  b',"Key":', json.dumps(op.key).encode()]
        if op.value is not None:
            parts += [b',"Value":"', base64.b64encode(op.value), b'"']
        if op.index is not None:
            parts.append(b',"Index":%d' % op.index)
        if op.session is not None:
            parts += [b',"Session":', json.dumps(op.session).encode()]
        parts.append(b"}}")
    parts.append(b"]")
    return b"".join(parts)


def duration(seconds: float) -> str:
    """A Go duration string for Consul, in whole milliseconds."""
    return f"{max(0, round(seconds * 1000))}ms"
