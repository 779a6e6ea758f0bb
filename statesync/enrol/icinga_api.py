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
``objects/query/Endpoint`` and ``objects/query/Zone``, nothing more. TLS, the kept connection,
auth and errors are ``icinga.api.IcingaClient``'s: the server's certificate is always verified,
against ``cafile`` (re-read for every new connection, as the CA may be renewed) and ``server_name``.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from ..errors import IcingaApiError, IcingaUnreachable
from ..icinga.api import POLL_INTERVAL, IcingaClient
from ..jsonload import loads

_PACKAGE_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")
# Files Icinga writes into every stage itself; they are not part of what was staged.
GENERATED_FILES = frozenset({"include.conf", "startup.log", "status"})
LOG_TAIL_LINES = 20


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


class IcingaApi(IcingaClient):
    """Icinga 2's config packages, stages and Endpoint and Zone objects, on one kept connection.

    ``url`` is ``https://HOST[:PORT]`` (port 5665 when none is given). Not thread-safe.
    """

    def __init__(self, url: str, user: str, password: str, cafile: str, server_name: str = "",
                 timeout: float = 10.0):
        super().__init__(url, user, password, cafile, server_name, timeout)

    def _file(self, pkg: str, stage: str, name: str) -> str | None:
        """One file of a stage, None when it does not exist (yet)."""
        path = f"/v1/config/files/{check_package(pkg)}/{_seg(stage)}/{quote(name, safe='/')}"
        # This endpoint refuses "Accept: application/json" with a 400.
        status, payload = self.request("GET", path, accept="application/octet-stream")
        if status == 404:
            return None
        if status != 200:
            raise self.fail("GET", path, status, payload)
        return payload.decode("utf-8", "replace")

    # -- packages and stages ---------------------------------------------------------------

    def ensure_package(self, pkg: str, busy_timeout: float = 60.0) -> None:
        """Create config package ``pkg`` unless it exists; a reload running is waited out for
        ``busy_timeout`` s."""
        path = f"/v1/config/packages/{check_package(pkg)}"
        try:
            self.json("POST", path, busy_timeout=busy_timeout)
        except IcingaUnreachable:
            raise
        except IcingaApiError:
            # Icinga answers an existing package with a bare 500 "Could not create package".
            if pkg not in self.packages():
                raise

    def packages(self) -> dict[str, dict]:
        """Every config package: ``{name: {"active": stage or None, "stages": [stage, ...]}}``."""
        out = {}
        for item in self.json("GET", "/v1/config/packages").get("results", []):
            out[item["name"]] = {"active": item.get("active-stage") or None, "stages": list(item.get("stages", []))}
        return out

    def active_stage(self, pkg: str) -> str | None:
        """The active stage of ``pkg``; None when the package or an active stage is missing."""
        return self.packages().get(check_package(pkg), {}).get("active")

    def stage_files(self, pkg: str, stage: str) -> list[str]:
        """The paths of the files staged in ``stage`` (Icinga's own files left out)."""
        path = f"/v1/config/stages/{check_package(pkg)}/{_seg(stage)}"
        items = self.json("GET", path).get("results", [])
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
        for item in self.json("POST", path, body, busy_timeout).get("results", []):
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

    def delete_inactive_stages(self, pkg: str, keep: set[str] = frozenset(), busy_timeout: float = 60.0) -> list[str]:
        """Delete every stage of ``pkg`` but the active one and those in ``keep`` (pass a stage still
        being validated); return those deleted. Deleting the active stage breaks the package, and
        the API allows it, so the active stage is read again right before. Icinga >= 2.16 refuses
        a DELETE while it reloads, as right after a valid stage: waited out for ``busy_timeout`` s."""
        current = self.packages().get(check_package(pkg))
        if current is None:
            return []
        active = current["active"]
        deleted = []
        for stage in current["stages"]:
            if stage == active or stage in keep:
                continue
            path = f"/v1/config/stages/{pkg}/{_seg(stage)}"
            self.json("DELETE", path, busy_timeout=busy_timeout)
            deleted.append(stage)
        return deleted

    # -- endpoints -------------------------------------------------------------------------

    def check_access(self) -> None:
        """Raise IcingaApiError naming the permission unless the user may read config packages and
        Endpoint and Zone objects. Without it ``endpoint_live`` could never say True."""
        self.packages()
        for kind in ("Endpoint", "Zone"):
            path = f"/v1/objects/{kind.lower()}s?attrs=package&verbose=1"
            status, payload = self.request("GET", path)
            if status == 200 and self._results(path, status, payload):
                continue
            # An empty 200 hides a permission filter: the user sees not even the master's own.
            if status == 200 or missing_permission(status, payload):
                raise self._lacks(kind)
            raise self.fail("GET", path, status, payload)

    def endpoint_live(self, cn: str) -> bool:
        """True when Icinga runs an Endpoint object ``cn`` (200), False when it has none (404);
        IcingaApiError naming the permission when the user may not read Endpoint objects."""
        path = f"/v1/objects/endpoints/{_seg(cn)}?attrs=package&verbose=1"
        status, payload = self.request("GET", path)
        if status == 200:
            return True
        if missing_permission(status, payload):
            raise self._lacks("Endpoint")
        if status == 404:
            return False
        raise self.fail("GET", path, status, payload)

    def _lacks(self, kind: str) -> IcingaApiError:
        """The one error for a missing objects/query permission, whichever way Icinga said it."""
        return IcingaApiError(f"Icinga 2 API GET /v1/objects/{kind.lower()}s: user {self.user!r} lacks the "
                              f"permission objects/query/{kind}: it sees no {kind}, not even the master's own",
                              403)

    def _results(self, path: str, status: int, payload: bytes) -> list:
        try:
            return loads(payload).get("results") or []
        except (ValueError, AttributeError):
            raise IcingaApiError(f"Icinga 2 API GET {path} answered {status} with no JSON", status) from None

    def endpoints(self) -> dict[str, dict]:
        """Every Endpoint object: ``{name: {"connected": bool, "package": str}}``."""
        data = self.json("GET", "/v1/objects/endpoints?attrs=connected&attrs=package")
        return {r["name"]: {"connected": bool(r["attrs"].get("connected")), "package": r["attrs"].get("package", "")}
                for r in data.get("results", [])}


    def zones(self) -> dict[str, dict]:
        """Every Zone object: ``{name: {"endpoints": [...], "parent": str, "package": str}}``."""
        data = self.json("GET", "/v1/objects/zones?attrs=endpoints&attrs=parent&attrs=package")
        out = {}
        for r in data.get("results", []):
            attrs = r.get("attrs") or {}
            members = attrs.get("endpoints") or []
            out[r["name"]] = {"endpoints": [m for m in members if isinstance(m, str)],
                              "parent": attrs.get("parent") or "", "package": attrs.get("package") or ""}
        return out


def missing_permission(status: int, payload: bytes) -> bool:
    """True when an objects query was refused for want of a permission. Icinga >= 2.14.9,
    2.15.5, 2.16.3 (and Debian's 2.14.6+deb13u1) answer 403 "Missing permission: objects/query/..."
    (lowercased); older ones 404 "No objects found.", as for a missing object, and tell the two
    apart only in the ``diagnostic_information`` of a ``verbose=1`` answer."""
    if status == 403:
        return True
    if status != 404:
        return False
    try:
        diagnosis = loads(payload).get("diagnostic_information")
    except (ValueError, AttributeError):
        return False
    return isinstance(diagnosis, str) and diagnosis.startswith("Error: Missing permission:")


def _seg(value: str) -> str:
    """``value`` as one path segment: a stage or endpoint name can never reach another resource."""
    if not value or value in (".", ".."):
        raise ValueError(f"invalid Icinga 2 object or stage name {value!r}")
    return quote(value, safe="")


__all__ = ["GENERATED_FILES", "IcingaApi", "IcingaUnreachable", "StageResult", "check_package", "missing_permission"]
