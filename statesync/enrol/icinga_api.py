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

    def ensure_package(self, pkg: str) -> None:
        """Create config package ``pkg`` unless it exists."""
        path = f"/v1/config/packages/{check_package(pkg)}"
        status, payload = self.request("POST", path)
        if status == 200:
            return
        # Icinga answers an existing package with a bare 500 "Could not create package".
        if pkg in self.packages():
            return
        raise self.fail("POST", path, status, payload)

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
            self.json("DELETE", path)
            deleted.append(stage)
        return deleted

    # -- endpoints -------------------------------------------------------------------------

    def check_access(self) -> None:
        """Raise IcingaApiError unless the user may read config packages and Endpoint objects.
        Icinga answers a missing permission with 404 "No objects found", exactly as for a missing
        object, so without this check ``endpoint_live`` would say False for ever."""
        self.packages()
        for read, kind in ((self.endpoints, "Endpoint"), (self.zones, "Zone")):
            try:
                found = read()
            except IcingaApiError as exc:
                if exc.status != 404:
                    raise
                found = {}
            if not found:
                raise IcingaApiError(f"Icinga 2 API GET /v1/objects/{kind.lower()}s: user {self.user!r} sees no "
                                     f"{kind}, not even the master's own: it lacks the permission "
                                     f"objects/query/{kind}", 404)


    def endpoint_live(self, cn: str) -> bool:
        """True when Icinga runs an Endpoint object ``cn`` (200), False when it has none (404)."""
        path = f"/v1/objects/endpoints/{_seg(cn)}"
        status, payload = self.request("GET", path)
        if status == 200:
            return True
        if status == 404:
            return False
        raise self.fail("GET", path, status, payload)

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


def _seg(value: str) -> str:
    """``value`` as one path segment: a stage or endpoint name can never reach another resource."""
    if not value or value in (".", ".."):
        raise ValueError(f"invalid Icinga 2 object or stage name {value!r}")
    return quote(value, safe="")


__all__ = ["GENERATED_FILES", "IcingaApi", "IcingaUnreachable", "StageResult", "check_package"]
