"""The only module that talks to Consul. Nothing else imports the client library.

Library and transport errors become the project's exception types; a failure is
always an exception, never a ``False`` return. Requests go through python-consul2's
transport interface (``consul.base.HTTPClient``) with a transport of ours on
``http.client`` keep-alive connections (one per thread and endpoint), and our own
response handling, so that Consul's own environment variables are interpreted by
``config`` (as Consul's CLI does) and not by the library, and so that a request costs
little client time. Swapping python-consul2 for py-consul changes this file only.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import json
import math
import queue
import select
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple


from consul import base as consul_base

from .errors import (CasConflict, ConsulUnavailable, LockHeld, LockLost, NotFound, PermissionDenied,
                     StoreError)

TXN_MAX_OPS_DEFAULT = 64
# Consul's txn_max_req_len is 512 KiB for the whole JSON body; keep headroom for the envelope.
TXN_MAX_BODY_DEFAULT = 480 * 1024
# Values above this go by plain PUT: inside a transaction they cost base64 and JSON twice.
PUT_THRESHOLD = 96 * 1024
# A fenced value must travel inside a transaction (a plain PUT cannot carry a check-session),
# so it must fit one transaction body once base64-encoded, with room for the fence.
FENCED_VALUE_MAX = TXN_MAX_BODY_DEFAULT * 3 // 4 - 1024


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int

    @property
    def url_host(self) -> str:
        """The host as it goes into a URL: IPv6 literals in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.scheme}://{self.url_host}:{self.port}"


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


class _Connection(consul_base.HTTPClient):
    """python-consul2's transport interface over one keep-alive ``http.client`` connection
    to one Consul endpoint, for one thread.

    python-consul2 ships transports for requests, aiohttp, tornado and twisted; this one
    is ours because a request through requests costs about 0.8 ms of client time here and
    through ``http.client`` about 0.15 ms, which counts when a backup sends hundreds of
    transactions. As with requests, a pooled connection the server has closed is replaced
    before it is used, and nothing is ever sent twice.
    """

    _HEADERS = {"User-Agent": "statesync", "Accept": "*/*",
                # Consul gzips large KV reads when asked; on loopback that triples the time.
                "Accept-Encoding": "identity"}

    def __init__(self, endpoint: Endpoint, tls: ssl.SSLContext | None, timeout: float):
        super().__init__(endpoint.url_host, endpoint.port, endpoint.scheme, tls is not None, None, timeout)
        self.endpoint = endpoint
        self.tls = tls
        self._conn: http.client.HTTPConnection | None = None

    # The library's transport interface: each call hands a consul.base.Response to ``callback``.
    def get(self, callback, path, params=None, headers=None):
        return callback(self.request("GET", path, params, None, headers or {}))

    def put(self, callback, path, params=None, data=b"", headers=None):
        return callback(self.request("PUT", path, params, data, headers or {}))

    def delete(self, callback, path, params=None, data=b"", headers=None):
        return callback(self.request("DELETE", path, params, data, headers or {}))

    def post(self, callback, path, params=None, data=b"", headers=None):
        return callback(self.request("POST", path, params, data, headers or {}))

    def request(self, method: str, path: str, params: list | None, body: bytes | None,
                headers: dict) -> consul_base.Response:
        url = urllib.parse.quote(path, safe="/:@")
        if params:
            url += "?" + urllib.parse.urlencode(params)
        conn = self._connection()
        try:
            conn.request(method, url, body=body, headers={**self._HEADERS, **headers})
            resp = conn.getresponse()
            content = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        # ``body`` (the decoded text) stays empty: nothing here reads it, and decoding a
        # recursive read of a whole tree costs time.
        return consul_base.Response(resp.status, resp.headers, "", content)

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            self.close()
            conn = None
        if conn is None:
            if self.tls is not None:
                conn = http.client.HTTPSConnection(self.endpoint.host, self.endpoint.port, timeout=self.timeout,
                                                   context=self.tls)
            else:
                conn = http.client.HTTPConnection(self.endpoint.host, self.endpoint.port, timeout=self.timeout)
            self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _raw(response: consul_base.Response) -> _Resp:
    return _Resp(response.code, response.headers, response.content)


def _dropped(sock) -> bool:
    """True when an idle keep-alive socket is readable: the server closed it (or broke the protocol)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


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
        self._ssl: ssl.SSLContext | None = None

    # -- transport -------------------------------------------------------------

    def _client(self, endpoint: Endpoint, blocking: float | None) -> "_Connection":
        cache = self._local.__dict__.setdefault("clients", {})
        key = (endpoint, blocking)
        client = cache.get(key)
        if client is None:
            # A blocking query waits on the server by design: it gets its own read timeout,
            # bounded all the same, so that a connection that died silently cannot hang it.
            timeout = blocking if blocking else self.settings.timeout
            client = _Connection(endpoint, self._tls_context() if endpoint.scheme == "https" else None, timeout)
            cache[key] = client
        return client

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                s = self.settings
                try:
                    ctx = ssl.create_default_context(cafile=s.cacert or None)
                    if not s.verify:
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                    if s.client_cert:
                        ctx.load_cert_chain(s.client_cert, s.client_key or None)
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    raise StoreError(f"TLS settings for Consul are unusable: {exc}") from None
                self._ssl = ctx
            return self._ssl

    def _headers(self) -> dict:
        return {"X-Consul-Token": self.settings.token} if self.settings.token else {}

    def _call(self, method: str, path: str, params: list | None = None, data: bytes | None = None,
              blocking: float | None = None) -> _Resp:
        endpoints = self.settings.endpoints
        last: Exception | None = None
        for attempt in range(len(endpoints)):
            idx = (self._current + attempt) % len(endpoints)
            client = self._client(endpoints[idx], blocking)
            try:
                self.stats.requests += 1
                if method == "get":
                    resp = client.get(_raw, path, params=params, headers=self._headers())
                else:
                    resp = getattr(client, method)(_raw, path, params=params, data=data or b"",
                                                   headers=self._headers())
            except ssl.SSLError as exc:
                self.stats.errors += 1
                raise StoreError(f"TLS with Consul at {endpoints[idx]} failed: {_tls_reason(exc)}") from None
            except (OSError, http.client.HTTPException) as exc:
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
            if b"acl not found" in resp.content.lower():  # an unknown, deleted or expired token
                raise PermissionDenied(f"Consul denied {what} of {key!r}: it does not know the ACL token "
                                       "(ACL not found); check consul.token_file (CONSUL_HTTP_TOKEN_FILE)")
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
        wait = max(1, int(wait_s))
        params = [("index", str(index)), ("wait", f"{wait}s")]
        # Consul adds up to wait/16 of jitter to the wait; then the normal timeout applies.
        read_timeout = wait * 17 / 16 + self.settings.timeout
        resp = self._call("get", f"/v1/kv/{key}", params=params, blocking=read_timeout)
        new_index = int(resp.headers.get("X-Consul-Index", index) or index)
        if resp.code == 404:
            return new_index, None
        self._check(resp, "read", key)
        return new_index, _pairs(resp.content)[0]

    def get_prefix(self, prefix: str) -> list[KVPair]:
        """Return every pair below ``prefix`` in one recursive read."""
        resp = self._call("get", f"/v1/kv/{prefix}", params=[("recurse", "1")])
        if resp.code == 404:
            return self._empty_or_denied(prefix)
        self._check(resp, "read", prefix)
        return _pairs(resp.content)

    def keys(self, prefix: str) -> list[str]:
        """Return the key names below ``prefix``."""
        resp = self._call("get", f"/v1/kv/{prefix}", params=[("keys", "1")])
        if resp.code == 404:
            return self._empty_or_denied(prefix)
        self._check(resp, "read", prefix)
        return json.loads(resp.content)

    def _empty_or_denied(self, prefix: str) -> list:
        """A listing answered 404: nothing there, or every key hidden by the token's ACL.

        Consul filters what a token may not read out of a listing instead of answering
        403, so read the prefix itself as one key: there a missing permission is a 403.
        """
        resp = self._call("get", f"/v1/kv/{prefix}")
        if resp.code != 404:
            self._check(resp, "read", prefix)
        return []

    def put(self, key: str, value: bytes, cas: int | None = None, fence: tuple[Op, ...] = ()) -> None:
        """Write ``value``; with ``cas`` only if the key's ModifyIndex still equals it (0: absent).

        With ``fence`` the write goes as a transaction opened by those operations.
        Raises CasConflict when the check-and-set lost, LockLost when a fence failed.
        """
        if fence:
            self.txn([*fence, Op("set" if cas is None else "cas", key, value, index=cas)])
            return
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

        Raises CasConflict when a cas/check operation failed, LockLost when a
        ``check-session`` fence failed (in both cases nothing was applied).
        """
        body = _txn_body(ops)
        resp = self._call("put", "/v1/txn", data=body)
        if resp.code == 409:
            errors = _txn_errors(resp.content)
            # Decided by the failing operation, not the message: a missing key reads alike for both.
            if _failed_op(resp.content, ops).verb == "check-session":
                raise LockLost(f"a fenced write was refused, the writer lock is gone: {'; '.join(errors)[:300]}")
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
            if len(value) > FENCED_VALUE_MAX:
                raise StoreError(f"value of {key!r} ({len(value)} bytes) is too large for a fenced transaction; "
                                 f"lower chunk_size to at most {FENCED_VALUE_MAX}")
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

    # -- sessions and locks ------------------------------------------------------------

    def session_create(self, name: str, ttl: float, lock_delay: float) -> str:
        """Create a session that only its TTL keeps alive; return its id.

        No node health check is attached: the session must outlive the Consul server it
        was created on (a cluster losing its leader) and end only when its holder stops
        renewing it. Keys it holds are released, not deleted, when it ends, and Consul
        then refuses to lock them for ``lock_delay`` seconds. Consul itself ends a session
        between ``ttl`` and twice ``ttl`` after its last renewal.
        Raises StoreError (a TTL the servers refuse), PermissionDenied or ConsulUnavailable.
        """
        body = json.dumps({"Name": name, "TTL": _duration(ttl), "LockDelay": _duration(lock_delay),
                           "Behavior": "release", "Checks": []}).encode()
        try:
            resp = self._call("put", "/v1/session/create", data=body)
        except ConsulUnavailable as exc:
            _raise_if_bad_ttl(str(exc).encode(), ttl)
            raise
        _raise_if_bad_ttl(resp.content, ttl)
        self._check_session(resp, "creation")
        try:
            return str(json.loads(resp.content)["ID"])
        except (ValueError, KeyError, TypeError):
            raise StoreError("Consul answered a session creation without a session id") from None

    def session_renew(self, session: str) -> None:
        """Reset the TTL of ``session``.

        Raises LockLost when the session has ended, ConsulUnavailable (also while a new
        leader cannot yet tell), PermissionDenied or StoreError.
        """
        resp = self._call("put", f"/v1/session/renew/{session}")
        if resp.code == 404:
            # A server elected a moment ago may not have replayed its log yet and answer 404 for
            # a live session; a consistent read, refused until it has, tells for sure.
            if self._session_exists(session):
                raise ConsulUnavailable(f"Consul's new leader does not know session {session} yet")
            raise LockLost(f"session {session} has ended (expired or destroyed)")
        self._check_session(resp, "renewal")

    def _session_exists(self, session: str) -> bool:
        resp = self._call("get", f"/v1/session/info/{session}", params=[("consistent", "1")])
        self._check_session(resp, "lookup")
        try:
            return bool(json.loads(resp.content or b"null"))
        except ValueError:
            raise StoreError("Consul answered a session lookup with invalid JSON") from None

    def session_destroy(self, session: str) -> None:
        """End ``session`` (ending one that has already ended is no error).

        Locks it still holds are released and Consul's lock-delay starts on them.
        """
        resp = self._call("put", f"/v1/session/destroy/{session}")
        self._check_session(resp, "destruction")

    def lock_acquire(self, key: str, session: str, value: bytes) -> None:
        """Lock ``key`` for ``session`` and set its value; locking it again with its holder is fine.

        Raises LockHeld when another session holds the key or Consul's lock-delay after
        the last holder is running, LockLost when ``session`` has ended, PermissionDenied,
        ConsulUnavailable or StoreError otherwise.
        """
        resp = self._lock_op("lock", key, session, value)
        if resp.code == 409:
            what = "; ".join(_txn_errors(resp.content))
            if "invalid session" in what.lower():
                raise LockLost(f"session {session} has ended: {what[:200]}")
            raise LockHeld(f"lock {key!r} is taken: {what[:200]}")
        self._check(resp, "lock", key)
        self.stats.kv_writes += 1

    def lock_release(self, key: str, session: str) -> None:
        """Unlock ``key`` if ``session`` holds it (no lock-delay follows an explicit release).

        Releasing a lock the session does not hold (any more) changes nothing and is no error.
        Raises PermissionDenied, ConsulUnavailable or StoreError.
        """
        resp = self._lock_op("unlock", key, session, None)
        if resp.code == 409:  # not held by this session (a refusal for lack of ACLs was raised already)
            return
        self._check(resp, "unlock", key)
        self.stats.kv_writes += 1

    def _lock_op(self, verb: str, key: str, session: str, value: bytes | None) -> _Resp:
        # As a transaction, a refused lock is a 409 naming the reason; the plain
        # ?acquire= form answers an ended session with a 500, which looks transient.
        resp = self._call("put", "/v1/txn", data=_txn_body([Op(verb, key, value, session=session)]))
        if resp.code == 409 and "permission denied" in _brief(resp.content, 1000).lower():
            self.stats.errors += 1
            raise PermissionDenied(f"Consul denied to {verb} {key!r}: the token lacks write permission on that key")
        return resp

    def _check_session(self, resp: _Resp, what: str) -> None:
        if resp.code == 403:
            self.stats.errors += 1
            raise PermissionDenied(f"Consul denied session {what}: the token lacks session write permission "
                                   f"on the Consul agent's node")
        self._check(resp, f"session {what}", "session")


class BulkWriter:
    """Writes many pairs while the caller is still producing them (a scan reading files).

    ``add`` fills transactions exactly as ``put_many`` does; each full transaction, and each
    large value (by plain PUT), is sent by one background thread over its own keep-alive
    connection while the caller goes on, with at most ``depth`` requests waiting. The last,
    partly filled transaction is *not* sent: the caller sends what is not in ``sent`` (the
    keys written) along with its own writes. The first failure is raised by the next ``add``
    or by ``close``. ``fence`` operations open every transaction. Not atomic as a whole.
    Use it as a context manager, or call ``close`` (which waits for the queued requests).
    """

    def __init__(self, store: "Store", fence: tuple[Op, ...] = (), depth: int = 2):
        self.store = store
        self.fence = tuple(fence)
        self.sent: set[str] = set()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._fence_size = sum(op.body_size() for op in self.fence)
        self._max_ops = store.settings.txn_max_ops - len(self.fence)
        self._batch: list[Op] = []
        self._size = self._fence_size

    def add(self, key: str, value: bytes) -> None:
        self._raise()
        if len(value) > PUT_THRESHOLD and not self.fence:
            self._submit(("put", key, value))
            return
        if len(value) > FENCED_VALUE_MAX:
            raise StoreError(f"value of {key!r} ({len(value)} bytes) is too large for a fenced transaction; "
                             f"lower chunk_size to at most {FENCED_VALUE_MAX}")
        op = Op("set", key, value)
        if self._batch and (len(self._batch) >= self._max_ops
                            or self._size + op.body_size() > self.store.settings.txn_max_body):
            self._submit(("txn", [*self.fence, *self._batch]))
            self._batch, self._size = [], self._fence_size
        self._batch.append(op)
        self._size += op.body_size()

    def close(self) -> None:
        """Wait until every queued request is done; raise the first failure."""
        self._stop()
        self._raise()

    def __enter__(self) -> "BulkWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:  # the caller failed: stop sending, and let its exception through
            if self._error is None:
                self._error = StoreError("bulk write abandoned")
            self._stop()

    def _submit(self, job: tuple) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="statesync-bulk-writer", daemon=True)
            self._thread.start()
        while True:
            try:
                self._queue.put(job, timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue  # failed: drain what was queued without sending it
            try:
                if job[0] == "put":
                    self.store.put(job[1], job[2])
                    self.sent.add(job[1])
                else:
                    self.store.txn(job[1])
                    self.sent.update(op.key for op in job[1] if op.verb == "set")
            except BaseException as exc:  # handed to the producer by add() or close()
                self._error = exc


def _txn_body(ops: list[Op]) -> bytes:
    """The /v1/txn body of ``ops`` (``[{"KV": {"Verb": ..., "Key": ..., "Value": base64, ...}}]``), built as bytes.

    A value's base64 never needs JSON escaping, so the values (nearly all of a body's bytes)
    are not passed through the JSON encoder nor decoded to str and encoded back.
    """
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


def _pair(d: dict) -> KVPair:
    raw = d.get("Value")
    value = binascii.a2b_base64(raw) if raw else b""
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


def _failed_op(content: bytes, ops: list[Op]) -> Op:
    """The operation a 409 answer names as failed; a blank Op when the answer names none."""
    try:
        return ops[int(json.loads(content)["Errors"][0]["OpIndex"])]
    except (ValueError, KeyError, IndexError, TypeError):
        return Op("", "")


def _is_conflict(what: str) -> bool:
    w = what.lower()
    return ("cas" in w or "index" in w or "doesn't exist" in w or "not exist" in w
            or "already exists" in w or "session" in w) and "permission" not in w


def _duration(seconds: float) -> str:
    """A Go duration string for Consul, in whole milliseconds."""
    return f"{max(0, round(seconds * 1000))}ms"


def _raise_if_bad_ttl(content: bytes, ttl: float) -> None:
    # Consul answers a TTL outside its session_ttl_min..24h with a 500; retrying cannot help.
    if b"Invalid Session TTL" in content:
        raise StoreError(f"lock.ttl: Consul refuses a session TTL of {ttl:g}s "
                         f"({_brief(content)}); raise lock.ttl or lower the servers' session_ttl_min")


def _tls_reason(exc: Exception) -> str:
    text = str(exc)
    low = text.lower().replace("_", " ")
    if "certificate verify failed" in low:
        _, _, detail = text.partition("certificate verify failed: ")
        detail = detail.split(" (_ssl", 1)[0].split("')", 1)[0].strip()
        return (f"certificate verification of Consul's server certificate failed ({detail or 'not trusted'}); "
                "consul.cacert (CONSUL_CACERT) must name the CA that signed it")
    # Consul with verify_incoming ends the handshake when it gets no client certificate, or one it does not
    # trust: with an alert, or (a race in reading it) with a bare EOF.
    advice = ("set consul.client_cert and consul.client_key (CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY) "
              "to a certificate signed by a CA Consul trusts")
    if any(n in low for n in ("certificate required", "bad certificate", "unknown ca", "certificate unknown")):
        return f"Consul rejected the client certificate or got none (verify_incoming): {advice}"
    if "eof occurred in violation of protocol" in low or "unexpected eof" in low:
        return ("Consul closed the connection in the handshake, as it does when it rejects the client "
                f"certificate or gets none (verify_incoming): {advice}")
    if "wrong version number" in low:
        return "wrong version number: does this address speak plain http instead of https?"
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


__all__ = ["BulkWriter", "ConsulSettings", "Endpoint", "KVPair", "NotFound", "Op", "Stats", "Store", "retry"]
