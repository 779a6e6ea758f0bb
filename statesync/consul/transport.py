"""python-consul2's transport interface over ``http.client`` keep-alive connections.

The library ships transports for requests, aiohttp, tornado and twisted. This one is ours
because a request through requests costs about 0.8 ms of client time here and through
``http.client`` about 0.15 ms, which counts when a backup sends hundreds of transactions;
and because statesync tries several Consul addresses in turn, which no library transport
does. As with requests, a pooled connection the server has closed is replaced before it is
used, and nothing is ever sent twice.
"""
from __future__ import annotations

import base64
import http.client
import os
import re
import select
import ssl
import threading
import urllib.parse
from dataclasses import dataclass

from ..errors import ConsulRefused, ConsulUnavailable, StoreError
from ..tlsclient import client_context
from .library import consul_base
from .settings import ConsulSettings, Endpoint


@dataclass
class Stats:
    requests: int = 0
    kv_writes: int = 0
    bytes_sent: int = 0
    errors: int = 0


class KeepAliveTransport(consul_base.HTTPClient):
    """The library's ``HTTPClient``: each call hands a ``consul.base.Response`` to ``callback``.

    One keep-alive connection per thread and endpoint, whatever the read timeout: a blocking
    query and a plain read from one thread share it, so that a thread holds one of the
    connections Consul counts per client address (``limits.http_max_conns_per_client``, 200 by
    default), and a fleet of guards behind one address is not refused at twice its size. When an address does not
    answer (or answers 5xx while others are listed) the next one is tried; the one that answered
    is tried first next time. Transport failures become ConsulUnavailable or StoreError. An
    exception the library's callback raises carries the ``response`` it was raised for, so that
    the store can word the error from the status and Consul's own answer (the library folds a
    409's list of failed operations into a message string).
    """

    _HEADERS = {"User-Agent": "statesync", "Accept": "*/*",
                # Consul gzips large KV reads when asked; on loopback that triples the time.
                "Accept-Encoding": "identity"}

    def __init__(self, settings: ConsulSettings, stats: Stats):
        first = settings.endpoints[0]
        super().__init__(first.url_host, first.port, first.scheme, settings.verify, None, settings.timeout)
        self.settings = settings
        self.stats = stats
        self._headers = dict(self._HEADERS)
        if settings.auth:
            # As the consul CLI sends CONSUL_HTTP_AUTH: "user" alone is the user with an empty password.
            user, _, password = settings.auth.partition(":")
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {basic}"
        self._current = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None

    def get(self, callback, path, params=None, headers=None):
        return self._deliver(callback, self._request("GET", path, params, None, headers))

    def put(self, callback, path, params=None, data="", headers=None):
        return self._deliver(callback, self._request("PUT", path, params, data, headers))

    def delete(self, callback, path, params=None, data="", headers=None):
        return self._deliver(callback, self._request("DELETE", path, params, data, headers))

    def post(self, callback, path, params=None, data="", headers=None):
        return self._deliver(callback, self._request("POST", path, params, data, headers))

    @staticmethod
    def _deliver(callback, response: consul_base.Response):
        try:
            return callback(response)
        except consul_base.ConsulException as exc:
            exc.response = response
            raise

    def _request(self, method: str, path: str, params, data, headers) -> consul_base.Response:
        query = urllib.parse.quote(path, safe="/:@")
        if params:
            query += "?" + urllib.parse.urlencode(params)
        body = data.encode() if isinstance(data, str) else data
        timeout = _read_timeout(params, self.settings.timeout)
        endpoints = self.settings.endpoints
        last: Exception | None = None
        for attempt in range(len(endpoints)):
            idx = (self._current + attempt) % len(endpoints)
            conn = self._connection(endpoints[idx], timeout)
            try:
                self.stats.requests += 1
                code, resp_headers, content = conn.request(method, endpoints[idx].path + query, body,
                                                           {**self._headers, **(headers or {})})
            except ssl.SSLError as exc:
                self.stats.errors += 1
                raise StoreError(f"TLS with Consul at {endpoints[idx]} failed: {tls_reason(exc)}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.stats.errors += 1
                last = refused(endpoints[idx], exc) if conn.was_new else exc
                continue
            if code == 401:
                # Consul itself never answers 401 (a missing ACL permission is a 403): a proxy in front does.
                self.stats.errors += 1
                raise StoreError(f"Consul at {endpoints[idx]} answered 401 Unauthorized: " + (
                    "the proxy in front of it refused the basic auth credentials of consul.auth (CONSUL_HTTP_AUTH)"
                    if self.settings.auth else "a proxy in front of it wants basic auth: set CONSUL_HTTP_AUTH "
                    "or consul.auth_file (STATESYNC_CONSUL_AUTH_FILE)"))
            if code >= 500 and len(endpoints) > 1:
                last = ConsulUnavailable(f"Consul at {endpoints[idx]} answered {code}: {brief(content)}")
                continue
            self._current = idx
            if code == 200 and body:
                self.stats.bytes_sent += len(body)
            # ``body`` is handed over undecoded: the library only json-parses it (bytes will do),
            # and decoding a recursive read of a whole tree to text costs time for nothing.
            return consul_base.Response(code, resp_headers, content, content)
        if isinstance(last, ConsulUnavailable):
            raise last
        where = ", ".join(str(e) for e in endpoints)
        raise ConsulUnavailable(f"Consul unreachable at {where} ({type(last).__name__})") from None

    def _connection(self, endpoint: Endpoint, timeout: float) -> "_Connection":
        cache = self._local.__dict__.setdefault("connections", {})
        conn = cache.get(endpoint)
        if conn is None:
            tls = self._tls_context() if endpoint.scheme == "https" else None
            conn = cache[endpoint] = _Connection(endpoint, tls, timeout, self.settings.tls_server_name)
        conn.timeout = timeout
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._ssl is None:
                s = self.settings
                try:
                    # strict X.509 cleared, as for Icinga: a CA without key identifiers works on every Python
                    ctx = client_context(cafile=s.cacert or None, cadata=_capath_pem(s.capath))
                    if not s.verify:
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                    if s.client_cert:
                        ctx.load_cert_chain(s.client_cert, s.client_key or None)
                except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                    raise StoreError(f"TLS settings for Consul are unusable: {exc}") from None
                self._ssl = ctx
            return self._ssl


_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")


def _capath_pem(capath: str) -> str | None:
    """Every certificate in the files below ``capath``, as one PEM text; None without a capath.

    The consul CLI trusts every PEM file in CONSUL_CAPATH (walked, sub-directories too) and fails
    on a file that holds none. ``load_verify_locations(capath=...)`` would find only files named by
    OpenSSL's subject hash (c_rehash), which a directory made for Consul need not have."""
    if not capath:
        return None
    texts = []
    for directory, dirs, files in os.walk(capath, onerror=_raise):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            with open(path, "rb") as fh:
                found = _PEM_CERT.findall(fh.read().decode("ascii", "replace"))
            if not found:
                raise ValueError(f"consul.capath: {path} holds no PEM certificate")
            texts.extend(found)
    if not texts:
        raise ValueError(f"consul.capath: {capath} holds no certificate file")
    return "\n".join(texts)


def _raise(exc: OSError) -> None:
    raise exc


class _HTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose certificate is verified against, and whose SNI is, ``server_name``
    rather than the host connected to (CONSUL_TLS_SERVER_NAME: Consul reached by IP or a proxy name)."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str):
        super().__init__(host, port, timeout=timeout, context=context)
        self.server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.server_name)


class _Connection:
    """One keep-alive ``http.client`` connection to one endpoint, for one thread; ``timeout`` is
    the read timeout of the next request (a blocking query waits longer than a plain read)."""

    def __init__(self, endpoint: Endpoint, tls: ssl.SSLContext | None, timeout: float, server_name: str = ""):
        self.endpoint = endpoint
        self.tls = tls
        self.timeout = timeout
        self.server_name = server_name
        self.was_new = False  # the last request opened the connection it went out on
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, url: str, body: bytes | None, headers: dict):
        conn = self._connection()
        try:
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            content = resp.read()
        except BaseException:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, resp.headers, content

    def _connection(self) -> http.client.HTTPConnection:
        conn = self._conn
        if conn is not None and conn.sock is not None and _dropped(conn.sock):
            self.close()
            conn = None
        self.was_new = conn is None or conn.sock is None
        if conn is None:
            e = self.endpoint
            if self.tls is not None and self.server_name:
                conn = _HTTPSConnection(e.host, e.port, self.timeout, self.tls, self.server_name)
            elif self.tls is not None:
                conn = http.client.HTTPSConnection(e.host, e.port, timeout=self.timeout, context=self.tls)
            else:
                conn = http.client.HTTPConnection(e.host, e.port, timeout=self.timeout)
            self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _read_timeout(params, timeout: float) -> float:
    """A blocking query (``wait`` set) waits on the server by design: it gets a read timeout of its
    own, still bounded, so that a connection that died silently cannot hang it. Consul adds up to
    wait/16 of jitter to the wait; the normal timeout comes on top."""
    for name, value in params or ():
        if name == "wait":
            seconds = float(str(value).rstrip("s"))
            return seconds * 17 / 16 + timeout
    return timeout


def _dropped(sock) -> bool:
    """True when an idle keep-alive socket is readable: the server closed it (or broke the protocol)."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def refused(endpoint: Endpoint, exc: BaseException) -> BaseException:
    """What a new connection that Consul closed before answering means; ``exc`` itself otherwise.

    Consul closes a connection at once, unanswered, when the client address already holds
    ``limits.http_max_conns_per_client`` (200 by default) — as it does for many satellites behind
    one NAT or proxy. Said plainly, so that it is never taken for Consul being away for a moment."""
    if isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)):
        return ConsulRefused(
            f"Consul at {endpoint} closed a new connection without answering ({type(exc).__name__}), as it does "
            "when this client address holds more than limits.http_max_conns_per_client connections (default 200): "
            "raise it on Consul for a fleet behind one address (README, \"A fleet behind one address\")")
    return exc


def brief(body: bytes, limit: int = 200) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return text[:limit]


def tls_reason(exc: Exception) -> str:
    text = str(exc)
    low = text.lower().replace("_", " ")
    if "hostname mismatch" in low or "ip address mismatch" in low:
        return ("Consul's server certificate is not valid for the name statesync verified (the address's host, "
                "or consul.tls_server_name); set consul.tls_server_name (CONSUL_TLS_SERVER_NAME) to a name the "
                "certificate holds")
    if "certificate verify failed" in low:
        _, _, detail = text.partition("certificate verify failed: ")
        detail = detail.split(" (_ssl", 1)[0].split("')", 1)[0].strip()
        return (f"certificate verification of Consul's server certificate failed ({detail or 'not trusted'}); "
                "consul.cacert or consul.capath (CONSUL_CACERT, CONSUL_CAPATH) must hold the CA that signed it")
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
