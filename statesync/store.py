"""The only module that talks to Consul. Nothing else imports the client library.

Library and transport errors become the project's exception types; a failure is
always an exception, never a ``False`` return. The client library's HTTP layer is
used with our own response handling, so that Consul's own environment variables
are interpreted by ``config`` (as Consul's CLI does) and not by the library.
"""
from __future__ import annotations

import base64
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import requests
from consul.std import HTTPClient

from .errors import CasConflict, ConsulUnavailable, NotFound, PermissionDenied, StoreError

TXN_MAX_OPS_DEFAULT = 64
# Consul's txn_max_req_len is 512 KiB for the whole JSON body; keep headroom for the envelope.
TXN_MAX_BODY_DEFAULT = 480 * 1024
# Values above this go by plain PUT: inside a transaction they cost base64 and JSON twice.
PUT_THRESHOLD = 96 * 1024


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class ConsulSettings:
    """How to reach Consul. ``token`` is never logged or shown."""

    endpoints: tuple[Endpoint, ...] = (Endpoint("http", "127.0.0.1", 8500),)
    token: str = field(default="", repr=False)
    cacert: str = ""
    client_cert: str = ""
    client_key: str = ""
    verify: bool = True
    timeout: float = 10.0
    txn_max_ops: int = TXN_MAX_OPS_DEFAULT
    txn_max_body: int = TXN_MAX_BODY_DEFAULT


class KVPair(NamedTuple):
    key: str
    value: bytes
    modify_index: int
    session: str = ""


@dataclass(frozen=True)
class Op:
    """One transaction operation: ``verb`` as in Consul's /v1/txn KV API."""

    verb: str
    key: str
    value: bytes | None = None
    index: int | None = None
    session: str | None = None

    def to_json(self) -> dict:
        kv: dict = {"Verb": self.verb, "Key": self.key}
        if self.value is not None:
            kv["Value"] = base64.b64encode(self.value).decode()
        if self.index is not None:
            kv["Index"] = self.index
        if self.session is not None:
            kv["Session"] = self.session
        return {"KV": kv}

    def body_size(self) -> int:
        value = 4 * math.ceil(len(self.value) / 3) if self.value else 0
        return value + len(self.key.encode()) + 96


@dataclass
class Stats:
    requests: int = 0
    kv_writes: int = 0
    bytes_sent: int = 0
    errors: int = 0


class _Resp(NamedTuple):
    code: int
    headers: dict
    content: bytes


def _raw(response) -> _Resp:
    return _Resp(response.code, response.headers, response.content)


def _brief(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:limit]


class Store:
    """A Consul KV client for statesync. Thread-safe for concurrent callers."""

    def __init__(self, settings: ConsulSettings):
        self.settings = settings
        self.stats = Stats()
        self._lock = threading.Lock()
        self._current = 0
        self._local = threading.local()

    # -- transport -------------------------------------------------------------

    def _client(self, endpoint: Endpoint, blocking: bool) -> HTTPClient:
        cache = self._local.__dict__.setdefault("clients", {})
        key = (endpoint, blocking)
        client = cache.get(key)
        if client is None:
            s = self.settings
            verify: bool | str = s.verify and (s.cacert or True)
            cert = (s.client_cert, s.client_key) if s.client_cert else None
            timeout = None if blocking else s.timeout
            client = HTTPClient(endpoint.host, endpoint.port, endpoint.scheme, verify, cert, timeout)
            # Consul gzips large KV reads when asked; on loopback that triples the time.
            client.session.headers["Accept-Encoding"] = "identity"
            cache[key] = client
        return client

    def _headers(self) -> dict:
        return {"X-Consul-Token": self.settings.token} if self.settings.token else {}

    def _call(self, method: str, path: str, params: list | None = None, data: bytes | None = None,
              blocking: bool = False) -> _Resp:
        endpoints = self.settings.endpoints
        last: Exception | None = None
        for attempt in range(len(endpoints)):
            idx = (self._current + attempt) % len(endpoints)
            client = self._client(endpoints[idx], blocking)
            try:
                self.stats.requests += 1
                fn = getattr(client, method)
                if method == "get":
                    resp = fn(_raw, path, params=params, headers=self._headers())
                else:
                    resp = fn(_raw, path, params=params, data=data or b"", headers=self._headers())
            except requests.exceptions.SSLError as exc:
                self.stats.errors += 1
                raise StoreError(f"TLS with Consul at {endpoints[idx]} failed: {_tls_reason(exc)}") from None
            except requests.exceptions.RequestException as exc:
                self.stats.errors += 1
                last = exc
                continue
            if resp.code >= 500 and len(endpoints) > 1:
                last = ConsulUnavailable(f"Consul at {endpoints[idx]} answered {resp.code}: {_brief(resp.content)}")
                continue
            self._current = idx
            return resp
        if isinstance(last, ConsulUnavailable):
            raise last
        where = ", ".join(str(e) for e in endpoints)
        raise ConsulUnavailable(f"Consul unreachable at {where} ({type(last).__name__})") from None

    def _check(self, resp: _Resp, what: str, key: str) -> None:
        if resp.code == 200:
            return
        self.stats.errors += 1
        if resp.code == 403:
            need = "read" if what == "read" else "write"
            raise PermissionDenied(
                f"Consul denied {what} of {key!r}: the token lacks {need} permission on that key prefix")
        if resp.code >= 500:
            raise ConsulUnavailable(f"Consul answered {resp.code} to {what} of {key!r}: {_brief(resp.content)}")
        raise StoreError(f"Consul answered {resp.code} to {what} of {key!r}: {_brief(resp.content)}")

    # -- key/value ---------------------------------------------------------------

    def ping(self) -> str:
        """Return the current raft leader address; raise ConsulUnavailable without one."""
        resp = self._call("get", "/v1/status/leader")
        self._check(resp, "read", "status/leader")
        leader = json.loads(resp.content or b'""')
        if not leader:
            raise ConsulUnavailable("Consul has no cluster leader")
        return leader

    def get(self, key: str, consistent: bool = False) -> KVPair | None:
        """Return the pair at ``key`` or None when it does not exist."""
        params = [("consistent", "1")] if consistent else None
        resp = self._call("get", f"/v1/kv/{key}", params=params)
        if resp.code == 404:
            return None
        self._check(resp, "read", key)
        return _pairs(resp.content)[0]

    def wait(self, key: str, index: int, wait_s: float) -> tuple[int, KVPair | None]:
        """Blocking query: return ``(index, pair)`` once ``key`` changes past ``index`` or the wait ends."""
        params = [("index", str(index)), ("wait", f"{max(1, int(wait_s))}s")]
        resp = self._call("get", f"/v1/kv/{key}", params=params, blocking=True)
        new_index = int(resp.headers.get("X-Consul-Index", index) or index)
        if resp.code == 404:
            return new_index, None
        self._check(resp, "read", key)
        return new_index, _pairs(resp.content)[0]

    def get_prefix(self, prefix: str) -> list[KVPair]:
        """Return every pair below ``prefix`` in one recursive read."""
        resp = self._call("get", f"/v1/kv/{prefix}", params=[("recurse", "1")])
        if resp.code == 404:
            return []
        self._check(resp, "read", prefix)
        return _pairs(resp.content)

    def keys(self, prefix: str) -> list[str]:
        """Return the key names below ``prefix``."""
        resp = self._call("get", f"/v1/kv/{prefix}", params=[("keys", "1")])
        if resp.code == 404:
            return []
        self._check(resp, "read", prefix)
        return json.loads(resp.content)

    def put(self, key: str, value: bytes, cas: int | None = None) -> None:
        """Write ``value``; with ``cas`` only if the key's ModifyIndex still equals it (0: absent)."""
        params = [("cas", str(cas))] if cas is not None else None
        resp = self._call("put", f"/v1/kv/{key}", params=params, data=value)
        self._check(resp, "write", key)
        self.stats.kv_writes += 1
        self.stats.bytes_sent += len(value)
        if resp.content.strip() != b"true":
            raise CasConflict(f"check-and-set on {key!r} lost: it changed since index {cas}")

    def delete(self, key: str) -> None:
        resp = self._call("delete", f"/v1/kv/{key}")
        self._check(resp, "delete", key)
        self.stats.kv_writes += 1

    def txn(self, ops: list[Op]) -> list[KVPair]:
        """Apply ``ops`` atomically; return the pairs the operations returned.

        Raises CasConflict when a cas/check operation failed (nothing was applied).
        """
        body = json.dumps([op.to_json() for op in ops]).encode()
        resp = self._call("put", "/v1/txn", data=body)
        if resp.code == 409:
            errors = _txn_errors(resp.content)
            if any(_is_conflict(e) for e in errors):
                raise CasConflict(f"transaction lost a check-and-set: {'; '.join(errors)[:300]}")
            if any("permission denied" in e.lower() for e in errors):
                key = _failed_key(resp.content, ops)
                raise PermissionDenied(
                    f"Consul denied a write below {key!r}: the token lacks write permission on that key prefix")
            raise StoreError(f"transaction rejected: {'; '.join(errors)[:300]}")
        if resp.code == 413:
            raise StoreError("transaction too large for Consul (lower txn_max_ops or check txn_max_req_len)")
        self._check(resp, "transaction", ops[0].key if ops else "")
        self.stats.kv_writes += sum(1 for op in ops if op.verb in ("set", "cas", "delete", "delete-cas", "delete-tree"))
        self.stats.bytes_sent += len(body)
        results = json.loads(resp.content).get("Results") or []
        return [_pair(r["KV"]) for r in results if r.get("KV")]

    def put_many(self, items: Iterable[tuple[str, bytes]], fence: tuple[Op, ...] = ()) -> int:
        """Write many pairs: small values in filled transactions, large ones by plain PUT.

        ``fence`` operations (for example ``check-session``) open every transaction.
        Returns the number of values written. Not atomic as a whole.
        """
        written = 0
        batch: list[Op] = []
        size = sum(op.body_size() for op in fence)
        max_ops = self.settings.txn_max_ops - len(fence)
        for key, value in items:
            if len(value) > PUT_THRESHOLD and not fence:
                self.put(key, value)
                written += 1
                continue
            op = Op("set", key, value)
            if batch and (len(batch) >= max_ops or size + op.body_size() > self.settings.txn_max_body):
                self.txn([*fence, *batch])
                written += len(batch)
                batch, size = [], sum(f.body_size() for f in fence)
            batch.append(op)
            size += op.body_size()
        if batch:
            self.txn([*fence, *batch])
            written += len(batch)
        return written

    def delete_many(self, keys: Iterable[str], fence: tuple[Op, ...] = ()) -> int:
        """Delete many keys in transactions; return how many."""
        keys = list(keys)
        step = self.settings.txn_max_ops - len(fence)
        for i in range(0, len(keys), step):
            self.txn([*fence, *(Op("delete", k) for k in keys[i:i + step])])
        return len(keys)


def _pair(d: dict) -> KVPair:
    raw = d.get("Value")
    value = base64.b64decode(raw) if raw else b""
    return KVPair(d["Key"], value, int(d.get("ModifyIndex", 0)), d.get("Session") or "")


def _pairs(content: bytes) -> list[KVPair]:
    try:
        return [_pair(d) for d in json.loads(content)]
    except (ValueError, KeyError, TypeError):
        raise StoreError("Consul returned a KV answer that is not valid JSON") from None


def _txn_errors(content: bytes) -> list[str]:
    try:
        return [str(e.get("What", "")) for e in json.loads(content).get("Errors") or []]
    except (ValueError, AttributeError):
        return [_brief(content)]


def _failed_key(content: bytes, ops: list[Op]) -> str:
    try:
        idx = json.loads(content)["Errors"][0]["OpIndex"]
        return ops[idx].key
    except (ValueError, KeyError, IndexError, TypeError):
        return ops[0].key if ops else ""


def _is_conflict(what: str) -> bool:
    w = what.lower()
    return ("cas" in w or "index" in w or "doesn't exist" in w or "not exist" in w
            or "already exists" in w or "session" in w) and "permission" not in w


def _tls_reason(exc: Exception) -> str:
    text = str(exc)
    for needle in ("CERTIFICATE_VERIFY_FAILED", "certificate required", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
                   "bad certificate", "WRONG_VERSION_NUMBER", "hostname mismatch"):
        if needle.lower() in text.lower():
            return needle.lower().replace("_", " ")
    return "handshake failed"


def retry(fn, attempts: int = 5, base: float = 0.2, cap: float = 5.0, sleep=time.sleep):
    """Call ``fn`` until it succeeds, retrying ConsulUnavailable with capped exponential backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except ConsulUnavailable:
            if attempt == attempts - 1:
                raise
            sleep(min(cap, base * (2 ** attempt)))
    raise AssertionError("unreachable")


__all__ = ["ConsulSettings", "Endpoint", "KVPair", "NotFound", "Op", "Stats", "Store", "retry"]
