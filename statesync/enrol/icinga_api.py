"""A small client of Icinga 2's REST API for the config package the master's sidecar owns.

Endpoint and Zone objects cannot be created one by one at runtime (each needs the other), so
the accepted satellites are written as files of a config package: ``stage`` uploads a new
stage, Icinga validates it in a child process and reloads with it when it is valid. A 200
reply to the upload only means the stage was written; ``wait_stage`` reads its ``status``
file ("0" valid, anything else invalid, absent while validating) and, when it failed, the
tail of its ``startup.log``. Every reload drops all cluster connections for a few seconds,
and staging the same text again reloads all the same: callers compare with
``active_files`` first.

The user needs the permissions ``config/query``, ``config/modify``,
``objects/query/Endpoint`` and ``objects/query/Zone``, nothing more. Standard library HTTP only; the server's
certificate is always verified, against ``cafile`` (re-read for every new connection, as
the CA may be renewed) and ``server_name``. The password never appears in a message or repr.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
from base64 import b64encode
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from ..errors import IcingaApiError

_PACKAGE_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
# Files Icinga writes into every stage itself; they are not part of what was staged.
GENERATED_FILES = frozenset({"include.conf", "startup.log", "status"})
POLL_INTERVAL = 0.2
LOG_TAIL_LINES = 20
_ERROR_TEXT = 200


class IcingaUnreachable(IcingaApiError):
    """No HTTP answer at all: refused, reset, timed out. Expected for a few seconds while Icinga
    reloads; a TLS verification failure is an IcingaApiError, never this. ``sent`` is False
    when the connection failed before the request left, so sending it again is safe."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


# How a connection the server closes shows, depending on when in the exchange it happens.
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError,
            ssl.SSLZeroReturnError)


@dataclass(frozen=True)
class StageResult:
    """How validating a stage ended: ``ok``, or not with the last lines of its startup.log."""

    ok: bool
    log_tail: str = ""


def check_package(pkg: str) -> str:
    """Return ``pkg`` when Icinga accepts it as a package name (``[A-Za-z0-9_-]+``); else ValueError."""
    if not isinstance(pkg, str) or not _PACKAGE_NAME.match(pkg):
        raise ValueError(f"invalid Icinga 2 config package name {pkg!r}: only letters, digits, '_' and '-'")
    return pkg


class _VerifiedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to the URL's host, with the certificate checked against ``server_name`` instead,
    as the master's certificate names its CN, not the address it is reached at."""

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


class IcingaApi:
    """One keep-alive HTTPS connection to Icinga 2's API, re-opened after any error.

    Not thread-safe: one caller at a time.
    """

    def __init__(self, url: str, user: str, password: str, cafile: str, server_name: str = "",
                 timeout: float = 10.0):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"Icinga 2 API URL must be https://HOST[:PORT], not {url!r}")
        self.url = f"https://{parts.netloc}"
        self.host = parts.hostname
        self.port = parts.port or 5665
        self.user = user
        self.cafile = cafile
        self.server_name = server_name or parts.hostname
        self.timeout = timeout
        self._auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
        self._conn: _VerifiedHTTPSConnection | None = None

    def __repr__(self) -> str:
        return f"IcingaApi(url={self.url!r}, user={self.user!r}, server_name={self.server_name!r})"

    def close(self) -> None:
        """Close the kept connection (the next call opens a new one)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> IcingaApi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: dict | None = None,
                 accept: str = "application/json") -> tuple[int, bytes]:
        """Send one request; return (status, body). Raise IcingaUnreachable without an answer."""
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
                raise IcingaUnreachable(f"Icinga 2 API {method} {path}: {self._why(exc)}", sent=True) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise IcingaUnreachable(f"Icinga 2 API {method} {path}: {self._why(exc)}", sent=True) from None
            if resp.will_close:
                self.close()
            return resp.status, payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, method: str, path: str) -> None:
        call = f"Icinga 2 API {method} {path}"
        try:
            ctx = ssl.create_default_context(cafile=self.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise IcingaApiError(f"{call}: cannot load CA file {self.cafile}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        # Icinga's certificates carry no key identifiers, which strict X.509 mode (the
        # default from Python 3.13) refuses; the chain and the host name are still checked.
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
        conn = _VerifiedHTTPSConnection(self.host, self.port, self.server_name, ctx, self.timeout)
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as exc:
            conn.close()
            raise IcingaApiError(f"{call}: TLS verification of {self.server_name!r} against {self.cafile} "
                                 f"failed: {exc.verify_message}") from None
        except _DROPPED as exc:
            conn.close()
            raise IcingaUnreachable(f"{call}: {self._why(exc)}", sent=False) from None
        except ssl.SSLError as exc:
            conn.close()
            raise IcingaApiError(f"{call}: TLS handshake with {self.url} failed: {exc.reason or exc}") from None
        except OSError as exc:
            conn.close()
            raise IcingaUnreachable(f"{call}: {self._why(exc)}", sent=False) from None
        self._conn = conn

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"no answer from {self.url} within {self.timeout:g}s"
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return f"{self.url} unreachable: {reason}"

    def _fail(self, method: str, path: str, status: int, payload: bytes) -> IcingaApiError:
        if status == 401:
            return IcingaApiError(f"Icinga 2 API {method} {path}: user {self.user!r} refused (401: wrong user "
                                  f"or password)", status)
        if status == 403:
            return IcingaApiError(f"Icinga 2 API {method} {path}: user {self.user!r} lacks the permission "
                                  f"(403): {_error_text(payload)}", status)
        return IcingaApiError(f"Icinga 2 API {method} {path} answered {status}: {_error_text(payload)}", status)

    def _json(self, method: str, path: str, body: dict | None = None, busy_timeout: float = 0.0) -> dict:
        """The JSON of a 200 answer. A 423 (another package update still running) or a connection
        refused is tried again until ``busy_timeout`` s have passed."""
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                status, payload = self._request(method, path, body)
            except IcingaUnreachable as exc:
                # the API is down while Icinga reloads; a request that never left is safe to repeat
                if exc.sent or time.monotonic() >= deadline:
                    raise
                status, payload = None, b""
            if status not in (None, 423) or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        if status != 200:
            raise self._fail(method, path, status, payload)
        try:
            return json.loads(payload)
        except ValueError:
            raise IcingaApiError(f"Icinga 2 API {method} {path} answered 200 with no JSON", status) from None

    def _file(self, pkg: str, stage: str, name: str) -> str | None:
        """One file of a stage, None when it does not exist (yet)."""
        path = f"/v1/config/files/{check_package(pkg)}/{_seg(stage)}/{quote(name, safe='/')}"
        # This endpoint refuses "Accept: application/json" with a 400.
        status, payload = self._request("GET", path, accept="application/octet-stream")
        if status == 404:
            return None
        if status != 200:
            raise self._fail("GET", path, status, payload)
        return payload.decode("utf-8", "replace")

    # -- packages and stages ---------------------------------------------------------------

    def ensure_package(self, pkg: str) -> None:
        """Create config package ``pkg`` unless it exists."""
        path = f"/v1/config/packages/{check_package(pkg)}"
        status, payload = self._request("POST", path)
        if status == 200:
            return
        # Icinga answers an existing package with a bare 500 "Could not create package".
        if pkg in self.packages():
            return
        raise self._fail("POST", path, status, payload)

    def packages(self) -> dict[str, dict]:
        """Every config package: ``{name: {"active": stage or None, "stages": [stage, ...]}}``."""
        out = {}
        for item in self._json("GET", "/v1/config/packages").get("results", []):
            out[item["name"]] = {"active": item.get("active-stage") or None, "stages": list(item.get("stages", []))}
        return out

    def active_stage(self, pkg: str) -> str | None:
        """The active stage of ``pkg``; None when the package or an active stage is missing."""
        return self.packages().get(check_package(pkg), {}).get("active")

    def stage_files(self, pkg: str, stage: str) -> list[str]:
        """The paths of the files staged in ``stage`` (Icinga's own files left out)."""
        path = f"/v1/config/stages/{check_package(pkg)}/{_seg(stage)}"
        items = self._json("GET", path).get("results", [])
        return sorted(i["name"] for i in items if i.get("type") == "file" and i["name"] not in GENERATED_FILES)

    def active_files(self, pkg: str) -> dict[str, str] | None:
        """``{path: text}`` of the active stage of ``pkg``; None when it has no active stage."""
        stage = self.active_stage(pkg)
        if stage is None:
            return None
        out = {}
        for name in self.stage_files(pkg, stage):
            text = self._file(pkg, stage, name)
            if text is None:
                raise IcingaApiError(f"Icinga 2 API: file {name} of active stage {stage} of {pkg} vanished while read")
            out[name] = text
        return out

    def stage(self, pkg: str, files: dict[str, str], busy_timeout: float = 60.0, activate: bool = True) -> str:
        """Upload ``files`` (``{"zones.d/master/x.conf": text}``) as a new stage of ``pkg`` and return
        its name. Icinga then validates it and reloads when it is valid: see ``wait_stage``. With
        ``activate`` False it only validates (Icinga >= 2.13): no activation, no reload.

        Icinga refuses a stage (423) until the reload that follows the last valid stage is over,
        which is seconds after its status said "0"; that is waited out for ``busy_timeout`` s."""
        path = f"/v1/config/stages/{check_package(pkg)}"
        body: dict = {"files": dict(files)}
        if not activate:
            body.update(activate=False, reload=False)
        for item in self._json("POST", path, body, busy_timeout).get("results", []):
            if item.get("stage") and item.get("package") == pkg:
                return item["stage"]
        raise IcingaApiError(f"Icinga 2 API POST {path} answered 200 without a stage name")

    def wait_stage(self, pkg: str, stage: str, timeout: float = 60.0) -> StageResult:
        """Poll the status of ``stage`` until Icinga has validated it. The API may drop out for a
        moment as Icinga reloads; raise IcingaApiError when no status came within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self._file(pkg, stage, "status")
            except IcingaUnreachable:
                status = None
            if status is not None and status.strip() == "0":
                return StageResult(True)
            if status is not None:
                log = self._file(pkg, stage, "startup.log") or ""
                return StageResult(False, "\n".join(log.rstrip().splitlines()[-LOG_TAIL_LINES:]))
            if time.monotonic() >= deadline:
                raise IcingaApiError(f"Icinga 2 API: stage {stage} of {pkg} not validated within {timeout:g}s")
            time.sleep(POLL_INTERVAL)

    def delete_inactive_stages(self, pkg: str, keep: set[str] = frozenset()) -> list[str]:
        """Delete every stage of ``pkg`` but the active one and those in ``keep`` (pass a stage still
        being validated); return those deleted. Deleting the active stage breaks the package, and
        the API allows it, so the active stage is read again right before."""
        current = self.packages().get(check_package(pkg))
        if current is None:
            return []
        active = current["active"]
        deleted = []
        for stage in current["stages"]:
            if stage == active or stage in keep:
                continue
            path = f"/v1/config/stages/{pkg}/{_seg(stage)}"
            self._json("DELETE", path)
            deleted.append(stage)
        return deleted

    # -- endpoints -------------------------------------------------------------------------

    def check_access(self) -> None:
        """Raise IcingaApiError unless the user may read config packages and Endpoint objects.
        Icinga answers a missing permission with 404 "No objects found", exactly as for a missing
        object, so without this check ``endpoint_live`` would say False for ever."""
        self.packages()
        try:
            found = self.endpoints()
        except IcingaApiError as exc:
            if exc.status != 404:
                raise
            found = {}
        if not found:
            raise IcingaApiError(f"Icinga 2 API GET /v1/objects/endpoints: user {self.user!r} sees no Endpoint, "
                                 f"not even the master's own: it lacks the permission objects/query/Endpoint",
                                 404)
        try:
            zones = self.zones()
        except IcingaApiError as exc:
            if exc.status != 404:
                raise
            zones = {}
        if not zones:
            raise IcingaApiError(f"Icinga 2 API GET /v1/objects/zones: user {self.user!r} sees no Zone, "
                                 f"not even the master's own: it lacks the permission objects/query/Zone", 404)


    def endpoint_live(self, cn: str) -> bool:
        """True when Icinga runs an Endpoint object ``cn`` (200), False when it has none (404)."""
        path = f"/v1/objects/endpoints/{_seg(cn)}"
        status, payload = self._request("GET", path)
        if status == 200:
            return True
        if status == 404:
            return False
        raise self._fail("GET", path, status, payload)

    def endpoints(self) -> dict[str, dict]:
        """Every Endpoint object: ``{name: {"connected": bool, "package": str}}``."""
        data = self._json("GET", "/v1/objects/endpoints?attrs=connected&attrs=package")
        return {r["name"]: {"connected": bool(r["attrs"].get("connected")), "package": r["attrs"].get("package", "")}
                for r in data.get("results", [])}


    def zones(self) -> dict[str, dict]:
        """Every Zone object: ``{name: {"endpoints": [...], "parent": str, "package": str}}``."""
        data = self._json("GET", "/v1/objects/zones?attrs=endpoints&attrs=parent&attrs=package")
        out = {}
        for r in data.get("results", []):
            attrs = r.get("attrs") or {}
            members = attrs.get("endpoints") or []
            out[r["name"]] = {"endpoints": [m for m in members if isinstance(m, str)],
                              "parent": attrs.get("parent") or "", "package": attrs.get("package") or ""}
        return out


def _seg(value: str) -> str:
    """``value`` as one path segment: a stage or endpoint name can never reach another resource."""
    if not value or value in (".", ".."):
        raise ValueError(f"invalid Icinga 2 object or stage name {value!r}")
    return quote(value, safe="")


def _error_text(payload: bytes) -> str:
    try:
        data = json.loads(payload)
        text = str(data.get("status") or data.get("error") or "")
    except (ValueError, AttributeError):
        text = payload.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:_ERROR_TEXT] or "no reason given"


__all__ = ["GENERATED_FILES", "IcingaApi", "IcingaUnreachable", "StageResult", "check_package"]
