"""One client of Icinga 2's REST API: TLS, the kept connection, auth, JSON and errors.

The guard's restart trigger and the enrolment's config-package client both talk through
``IcingaClient``, so they cannot disagree on how Icinga's certificate is checked: they once
did, and the trigger's context would have refused every Icinga certificate on Python 3.13.
Standard library HTTP only. The password never appears in a message or repr.
"""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from base64 import b64encode
from urllib.parse import urlsplit

from ..errors import IcingaApiError, IcingaTlsError, IcingaUnreachable
from ..jsonload import loads
from ..tlsclient import client_context

DEFAULT_PORT = 5665
POLL_INTERVAL = 0.2
_ERROR_TEXT = 200
# Answers that mean "not now, nothing was done": 423 while another package update runs (all
# versions); 503 from 2.16 on while Icinga reloads ("Icinga is reloading": a config-package or
# stage POST or DELETE that cannot take the config objects' lock, or comes within 2.7 s of the
# last stage's reload request) and while the old worker stops ("Shutting down."). Each is over
# when the reload is, so the same request is sent again within the caller's ``busy_timeout``.
BUSY_STATUSES = frozenset({423, 503})


# How a connection the server closes shows, depending on when in the exchange it happens.
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
            ssl.SSLZeroReturnError)


def tls_context(cafile: str | None) -> ssl.SSLContext:
    """The context every connection to Icinga 2's API uses: the chain verified against ``cafile``
    (the system's CAs when None) and the host name checked, with ``VERIFY_X509_STRICT`` cleared,
    as Icinga 2's certificates carry no key identifiers (statesync/tlsclient.py says why).
    Raises OSError or ssl.SSLError when ``cafile`` cannot be loaded."""
    return client_context(cafile)


class _VerifiedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the URL's host, with the certificate checked against ``server_name`` instead,
    as an Icinga node's certificate names its CN, not the address it is reached at."""

    def __init__(self, host: str, port: int, server_name: str, ctx: ssl.SSLContext, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._server_name = server_name
        self._ctx = ctx

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)
        except BaseException:
            sock.close()
            raise


class IcingaClient:
    """One keep-alive connection to Icinga 2's API, re-opened after any error.

    ``url`` is ``https://HOST[:PORT]`` (any path is the caller's); ``http://`` only with
    ``allow_http`` (the guard accepts it on loopback). ``cafile`` is re-read for every new
    connection, as the CA may be renewed; "" verifies against the system's CAs. Not
    thread-safe: one caller at a time.
    """

    def __init__(self, url: str, user: str, password: str, cafile: str = "", server_name: str = "",
                 timeout: float = 10.0, default_port: int | None = DEFAULT_PORT, allow_http: bool = False):
        parts = urlsplit(url)
        schemes = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"Icinga 2 API URL must be https://HOST[:PORT], not {url!r}")
        self.tls = parts.scheme == "https"
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port or default_port or (443 if self.tls else 80)
        self.user = user
        self.cafile = cafile
        self.server_name = server_name or parts.hostname
        self.timeout = timeout
        self._auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
        self._conn: http.client.HTTPConnection | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r}, user={self.user!r}, server_name={self.server_name!r})"

    def close(self) -> None:
        """Close the kept connection (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request(self, method: str, path: str, body: dict | None = None,
                accept: str = "application/json") -> tuple[int, bytes]:
        """Send one request; return (status, body). Raise IcingaUnreachable without an answer and
        IcingaTlsError when the server could not be verified."""
        headers = {"Authorization": self._auth, "Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            headers["Content-Length"] = "0"
        for attempt in (1, 2):
            reused = self._conn is not None
            if not reused:
                self._open(method, path)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                resp = self._conn.getresponse()
                payload = resp.read()
            except _DROPPED as exc:
                self.close()
                # A kept connection the server has since closed (after a reload, say) fails
                # before any answer: one more try on a new one.
                if reused and attempt == 1:
                    continue
                raise IcingaUnreachable(f"Icinga 2 API {method} {path}: {self._why(exc)}", True,
                                        type(exc).__name__) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise IcingaUnreachable(f"Icinga 2 API {method} {path}: {self._why(exc)}", True,
                                        type(exc).__name__) from None
            if resp.will_close:
                self.close()
            return resp.status, payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, method: str, path: str) -> None:
        call = f"Icinga 2 API {method} {path}"
        if not self.tls:
            conn: http.client.HTTPConnection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        else:
            try:
                ctx = tls_context(self.cafile or None)
            except (OSError, ssl.SSLError) as exc:
                raise IcingaTlsError(f"{call}: cannot load CA file {self.cafile}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None
            conn = _VerifiedHTTPSConnection(self.host, self.port, self.server_name, ctx, self.timeout)
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise IcingaTlsError(f"{call}: TLS verification of {self.server_name!r} against "
                                 f"{self.cafile or 'the system CAs'} failed: {exc.verify_message}") from None
        except _DROPPED as exc:
            conn.close()
            raise IcingaUnreachable(f"{call}: {self._why(exc)}", False, type(exc).__name__) from None
        except ssl.SSLError as exc:
            conn.close()
            raise IcingaTlsError(f"{call}: TLS handshake with {self.url} failed: {exc.reason or exc}") from None
        except OSError as exc:
            conn.close()
            raise IcingaUnreachable(f"{call}: {self._why(exc)}", False, type(exc).__name__) from None
        self._conn = conn

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"no answer from {self.url} within {self.timeout:g}s"
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"{self.url} unreachable: {reason}"

    def fail(self, method: str, path: str, status: int, payload: bytes) -> IcingaApiError:
        """The error for an answer that is not the one expected, with Icinga's own reason."""
        if status == 401:
            return IcingaApiError(f"Icinga 2 API {method} {path}: user {self.user!r} refused (401: wrong user "
                                  f"or password)", status)
        if status == 403:
            return IcingaApiError(f"Icinga 2 API {method} {path}: user {self.user!r} lacks the permission "
                                  f"(403): {error_text(payload)}", status)
        return IcingaApiError(f"Icinga 2 API {method} {path} answered {status}: {error_text(payload)}", status)

    def json(self, method: str, path: str, body: dict | None = None, busy_timeout: float = 0.0) -> dict:
        """The JSON of a 200 answer. A busy answer (``BUSY_STATUSES``: a package update or a reload
        still running) or a connection refused is tried again until ``busy_timeout`` s have passed,
        every ``POLL_INTERVAL`` s: the wait is Icinga's reload, seconds long, not a failure to back
        off from (and ``consul/backoff`` is out of this layer's reach)."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                status, payload = self.request(method, path, body)
            except IcingaUnreachable as exc:
                # the API is down while Icinga reloads; a request that never left is safe to repeat
                if exc.sent or time.monotonic() >= deadline:
                    raise
                status, payload = None, b""
            if (status is not None and status not in BUSY_STATUSES) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        if status != 200:
            raise self.fail(method, path, status, payload)
        try:
            return loads(payload)
        except ValueError:
            raise IcingaApiError(f"Icinga 2 API {method} {path} answered 200 with no JSON", status) from None


def error_text(payload: bytes) -> str:
    """Icinga's reason in an error answer, on one line and short."""
    try:
        data = loads(payload)
        text = str(data.get("status") or data.get("error") or "")
    except (ValueError, AttributeError):
        text = payload.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:_ERROR_TEXT] or "no reason given"


__all__ = ["BUSY_STATUSES", "DEFAULT_PORT", "IcingaClient", "IcingaTlsError", "IcingaUnreachable", "error_text", "tls_context"]
