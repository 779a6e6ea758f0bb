"""statesync.enrol.icinga_api against a real Icinga 2 master (Debian's icinga2-bin).

One master runs for the module, in its own mount namespace (tests/icinga.py), once per Icinga 2
version of the matrix (2.13, 2.14, 2.16: tests/e2e/conftest.py); where the versions answer
differently (403 or 404, 423 or 503) the test names which gives what. Every test
talks to it as an ApiUser with exactly the permissions the enrolment needs:
config/query, config/modify, objects/query/Endpoint and objects/query/Zone. The timings of stage -> valid ->
endpoint live are printed at the end of the run.
"""
from __future__ import annotations

import secrets
import shutil
import statistics
import time

import pytest

from statesync.enrol.icinga_api import IcingaApi, StageResult, check_package, missing_permission
from statesync.errors import IcingaApiError, IcingaUnreachable

from .. import certs, icinga
from ..icinga import Node
from ..support import free_ports, wait_for

pytestmark = [pytest.mark.e2e]

USER, PASSWORD = "statesync", "lp-" + secrets.token_hex(8)
PERMISSIONS = icinga.ENROL_PERMISSIONS
NO_ZONE_USER = "no-zones"
ROOT_PASSWORD = "root-" + secrets.token_hex(8)
NO_ENDPOINT_USER = "no-endpoints"
STAGE_TIMEOUT = 60.0
LIVE_TIMEOUT = 30.0


def zone_file(cn: str, parent: str = "master") -> str:
    return (f'object Endpoint "{cn}" {{\n}}\n\n'
            f'object Zone "{cn}" {{\n  endpoints = [ "{cn}" ]\n  parent = "{parent}"\n}}\n')


def conf_path(cn: str) -> str:
    return f"zones.d/master/{cn}.conf"


class Master:
    def __init__(self, node: Node):
        self.node = node
        self.times: list[dict[str, float]] = []
        self.notes: list[str] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.node.api_port}"

    def api(self, **overrides) -> IcingaApi:
        kw = {"url": self.url, "user": USER, "password": PASSWORD, "cafile": str(self.node.ca_cert()),
              "server_name": self.node.cn, "timeout": 10.0}
        kw.update(overrides)
        return IcingaApi(**kw)

    def version(self) -> str:
        """Icinga's own version string ("r2.16.6-1"), read as the all-permissions user."""
        root = icinga.Api(self.node, "root", ROOT_PASSWORD)
        got = wait_for(lambda: _status(root), LIVE_TIMEOUT, what="Icinga status readable", step=0.1)
        return got["results"][0]["status"]["icingaapplication"]["app"]["version"]

    def program_start(self) -> float:
        """When Icinga's current worker started (read as the all-permissions user: status is not ours)."""
        root = icinga.Api(self.node, "root", ROOT_PASSWORD)
        got = wait_for(lambda: _status(root), LIVE_TIMEOUT, what="Icinga status readable", step=0.1)
        return got["results"][0]["status"]["icingaapplication"]["app"]["program_start"]


def _status(root: icinga.Api):
    try:
        return root.get("/v1/status/IcingaApplication")
    except (OSError, ValueError):  # reloading: the API drops out for a moment
        return None


def wait_live(api: IcingaApi, cn: str, timeout: float = LIVE_TIMEOUT) -> None:
    def live() -> bool:
        try:
            return api.endpoint_live(cn)
        except IcingaUnreachable:
            return False
    wait_for(live, timeout, what=f"endpoint {cn} live", step=0.1)


def stage_and_wait(api: IcingaApi, pkg: str, files: dict[str, str]) -> tuple[str, StageResult]:
    stage = api.stage(pkg, files)
    return stage, api.wait_stage(pkg, stage, STAGE_TIMEOUT)


@pytest.fixture(scope="module")
def master(tmp_path_factory, request, icinga_root):
    icinga.require_nodes(icinga_root)
    (port,) = free_ports(1)
    base = tmp_path_factory.mktemp("icinga-api")
    node = Node("master1", "master", str(base / "master1"), port, "t-" + secrets.token_hex(3),
                icinga_root=icinga_root)
    icinga.provision_master(node, [], "root", ROOT_PASSWORD)
    perms = ", ".join(f'"{p}"' for p in PERMISSIONS)
    (node.etc / "conf.d/statesync-api.conf").write_text(
        f'object ApiUser "{USER}" {{\n  password = "{PASSWORD}"\n  permissions = [ {perms} ]\n}}\n'
        f'object ApiUser "{NO_ENDPOINT_USER}" {{\n  password = "{PASSWORD}"\n'
        f'  permissions = [ "config/query", "config/modify" ]\n}}\n'
        f'object ApiUser "{NO_ZONE_USER}" {{\n  password = "{PASSWORD}"\n'
        f'  permissions = [ "config/query", "config/modify", "objects/query/Endpoint" ]\n}}\n')
    # node setup --disable-confd includes conf.d/api-users.conf alone
    with open(node.etc / "icinga2.conf", "a") as fh:
        fh.write('include "conf.d/statesync-api.conf"\n')
    m = Master(node)
    request.config.pluginmanager.register(_Report(m), f"icinga-api-times-{node.session}")
    try:
        node.start()
        yield m
    finally:
        killed = node.stop()
        assert not killed, f"Icinga 2 had to be killed: {killed}"


class _Report:
    def __init__(self, master: Master):
        self.master = master

    def pytest_terminal_summary(self, terminalreporter):
        for line in _summary(self.master):
            terminalreporter.write_line(line)


def _summary(m: Master) -> list[str]:
    lines = []
    if m.times:
        spans = {k: sorted(t[k] for t in m.times) for k in m.times[0]}
        lines.append(f"icinga_api timings, median [min-max] of {len(m.times)}: " + ", ".join(
            f"{k}={statistics.median(v):.2f}s [{v[0]:.2f}-{v[-1]:.2f}]" for k, v in spans.items()))
    return lines + [f"icinga_api: {n}" for n in m.notes]


# -- the happy path ---------------------------------------------------------------------

def test_staging_an_endpoint_and_zone_makes_the_endpoint_live_and_active_files_return_the_text(master):
    api = master.api()
    pkg = "statesync-live"
    api.ensure_package(pkg)
    assert api.packages()[pkg] == {"active": None, "stages": []}
    assert api.active_files(pkg) is None
    files: dict[str, str] = {}
    for cn in ("sat-a", "sat-b", "sat-c"):
        files[conf_path(cn)] = zone_file(cn)
        t0 = time.monotonic()
        stage = api.stage(pkg, files)
        t1 = time.monotonic()
        assert api.wait_stage(pkg, stage, STAGE_TIMEOUT) == StageResult(True, "")
        t2 = time.monotonic()
        wait_live(api, cn)
        t3 = time.monotonic()
        master.times.append({"stage_call": t1 - t0, "stage_to_status_ok": t2 - t0, "status_ok_to_live": t3 - t2,
                             "stage_to_live": t3 - t0})
        assert api.packages()[pkg]["active"] == stage
        assert api.active_files(pkg) == files
    seen = api.endpoints()
    assert {cn: seen[cn] for cn in ("sat-a", "sat-b", "sat-c")} == {
        cn: {"connected": False, "package": pkg} for cn in ("sat-a", "sat-b", "sat-c")}
    assert seen["master1"]["package"] == "_etc"


def test_ensuring_an_existing_package_is_fine(master):
    api = master.api()
    api.ensure_package("statesync-twice")
    api.ensure_package("statesync-twice")
    assert "statesync-twice" in api.packages()


def test_one_kept_connection_carries_on_across_a_reload(master):
    api = master.api()
    api.ensure_package("statesync-keep")
    api.packages()
    sock = api._conn.sock
    _, result = stage_and_wait(api, "statesync-keep", {conf_path("sat-keep"): zone_file("sat-keep")})
    assert result.ok
    wait_live(api, "sat-keep")
    assert api.endpoint_live("sat-keep") is True
    assert api._conn is not None and api._conn.sock is not sock  # the reload closed the first one


def test_staging_the_same_text_again_reloads_icinga_all_the_same(master):
    api = master.api()
    pkg = "statesync-same"
    files = {conf_path("sat-same"): zone_file("sat-same")}
    api.ensure_package(pkg)
    _, first = stage_and_wait(api, pkg, files)
    assert first.ok
    wait_live(api, "sat-same")
    before = wait_for(lambda: master.program_start(), LIVE_TIMEOUT, what="program_start")
    time.sleep(1.1)  # program_start has a resolution of a second in what it tells apart here
    _, again = stage_and_wait(api, pkg, files)
    assert again.ok
    after = wait_for(lambda: (t := master.program_start()) != before and t, LIVE_TIMEOUT,
                     what="Icinga reloaded after the same text was staged again", step=0.2)
    master.notes.append(f"staging identical text again reloaded Icinga (program_start {before:.1f} -> {after:.1f})")
    assert api.active_files(pkg) == files


# -- failures ---------------------------------------------------------------------------

def test_an_invalid_stage_fails_with_its_startup_log_and_the_previous_stage_stays_active_and_live(master):
    api = master.api()
    pkg = "statesync-invalid"
    good = {conf_path("sat-good"): zone_file("sat-good")}
    api.ensure_package(pkg)
    good_stage, result = stage_and_wait(api, pkg, good)
    assert result.ok
    wait_live(api, "sat-good")
    bad = {**good, conf_path("sat-orphan"): zone_file("sat-orphan", parent="no-such-zone")}
    bad_stage, result = stage_and_wait(api, pkg, bad)
    assert result.ok is False
    assert "no-such-zone" in result.log_tail and "critical/config" in result.log_tail
    assert len(result.log_tail.splitlines()) <= 20
    listed = api.packages()[pkg]
    assert listed["active"] == good_stage and bad_stage in listed["stages"]
    assert api.active_files(pkg) == good
    assert api.endpoint_live("sat-good") is True
    assert api.endpoint_live("sat-orphan") is False


def test_deleting_inactive_stages_never_removes_the_active_one(master):
    api = master.api()
    pkg = "statesync-prune"
    api.ensure_package(pkg)
    old, result = stage_and_wait(api, pkg, {conf_path("sat-p1"): zone_file("sat-p1")})
    assert result.ok
    active, result = stage_and_wait(api, pkg, {conf_path("sat-p2"): zone_file("sat-p2")})
    assert result.ok
    failed, result = stage_and_wait(api, pkg, {conf_path("sat-p3"): zone_file("sat-p3", parent="none")})
    assert not result.ok
    assert api.delete_inactive_stages(pkg, keep={failed}) == [old]
    listed = api.packages()[pkg]
    assert listed["active"] == active and set(listed["stages"]) == {active, failed}
    assert api.delete_inactive_stages(pkg) == [failed]
    assert api.delete_inactive_stages(pkg) == []
    assert api.packages()[pkg] == {"active": active, "stages": [active]}
    wait_live(api, "sat-p2")
    assert api.active_files(pkg) == {conf_path("sat-p2"): zone_file("sat-p2")}


def test_old_stages_are_deleted_right_after_a_valid_stage_while_icinga_reloads_with_it(master):
    """As the acceptor does after each valid stage. 2.16 refuses a stage DELETE (and POST) with
    503 "Icinga is reloading" until the reload is over; 2.13 and 2.14 accept the DELETE at once."""
    api = master.api()
    pkg = "statesync-reloading"
    api.ensure_package(pkg)
    old, result = stage_and_wait(api, pkg, {conf_path("sat-r1"): zone_file("sat-r1")})
    assert result.ok
    wait_live(api, "sat-r1")
    new, result = stage_and_wait(api, pkg, {conf_path("sat-r2"): zone_file("sat-r2")})
    assert result.ok
    assert api.delete_inactive_stages(pkg, keep={new}) == [old]
    wait_live(api, "sat-r2")
    assert api.packages()[pkg] == {"active": new, "stages": [new]}


def test_a_wrong_password_is_one_error_line_without_the_password(master):
    wrong = "wrong-" + secrets.token_hex(8)
    api = master.api(password=wrong)
    with pytest.raises(IcingaApiError) as info:
        api.packages()
    msg = str(info.value)
    assert info.value.status == 401
    assert "\n" not in msg and "GET /v1/config/packages" in msg
    assert wrong not in msg and PASSWORD not in msg and "Basic" not in msg
    assert wrong not in repr(api)


def test_the_repr_names_the_url_and_user_but_never_the_password(master):
    api = master.api()
    assert repr(api) == f"IcingaApi(url={master.url!r}, user={USER!r}, server_name='master1')"
    assert PASSWORD not in repr(api) and PASSWORD not in str(vars(api))


def test_a_server_certificate_for_another_name_is_refused(master):
    with pytest.raises(IcingaApiError) as info:
        master.api(server_name="master2").packages()
    assert "master2" in str(info.value) and "\n" not in str(info.value)
    assert not isinstance(info.value, IcingaUnreachable)


def test_the_url_host_is_the_name_checked_when_no_server_name_is_given(master):
    with pytest.raises(IcingaApiError, match="127.0.0.1"):
        master.api(server_name="").packages()


def test_a_cafile_of_another_ca_is_refused(master, tmp_path):
    other = tmp_path / "other-ca.crt"
    other.write_bytes(certs.make_ca("Icinga CA").pem)
    with pytest.raises(IcingaApiError, match="TLS verification") as info:
        master.api(cafile=str(other)).packages()
    assert not isinstance(info.value, IcingaUnreachable)


def test_the_cafile_is_read_again_for_every_new_connection(master, tmp_path):
    ca = tmp_path / "ca.crt"
    shutil.copy(master.node.ca_cert(), ca)
    api = master.api(cafile=str(ca))
    assert "_api" in api.packages()
    ca.write_bytes(certs.make_ca("Icinga CA").pem)
    assert "_api" in api.packages()  # the kept connection was verified already
    api.close()
    with pytest.raises(IcingaApiError, match="TLS verification"):
        api.packages()


def test_an_unreachable_port_is_an_icinga_api_error(master):
    (port,) = free_ports(1)
    api = master.api(url=f"https://127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(IcingaUnreachable) as info:
        api.endpoint_live("sat-a")
    assert isinstance(info.value, IcingaApiError) and info.value.status is None
    assert f"127.0.0.1:{port}" in str(info.value) and "\n" not in str(info.value)


def test_the_test_user_holds_no_permission_beyond_the_four_it_needs(master):
    api = master.api()
    api.check_access()
    root = icinga.Api(master.node, "root", ROOT_PASSWORD)
    assert root.get("/v1/objects/zones")["results"]
    # What a user may not see: 2.13 (and upstream up to 2.14.8, 2.15.4, 2.16.2) hides it behind
    # 404, as if it did not exist; 2.14.6+deb13u1, 2.14.9, 2.15.5 and 2.16.3 on answer 403.
    for method, path in (("GET", "/v1/objects/hosts"), ("GET", "/v1/status"),
                         ("POST", "/v1/actions/restart-process")):
        with pytest.raises(IcingaApiError) as info:
            api.json(method, path)
        assert info.value.status in (403, 404), (method, path)
        master.notes.append(f"Icinga {master.version()}: {method} {path} without the permission answered "
                            f"{info.value.status}")
    status, payload = api.request("GET", "/v1/objects/hosts?verbose=1")
    assert missing_permission(status, payload), (status, payload)


def test_a_user_without_the_endpoint_permission_is_told_so_by_check_access_and_endpoint_live(master):
    """2.13 answers the missing permission 404, as for a missing endpoint, 2.14.6+deb13u1 and
    2.16 403: both give this one error, where endpoint_live once said False on 2.13 and raised
    Icinga's lowercased "objects/query/endpoint" on 2.14.6+deb13u1 and 2.16."""
    api = master.api(user=NO_ENDPOINT_USER)
    assert "_api" in api.packages()
    told = (f"Icinga 2 API GET /v1/objects/endpoints: user '{NO_ENDPOINT_USER}' lacks the permission "
            f"objects/query/Endpoint: it sees no Endpoint, not even the master's own")
    with pytest.raises(IcingaApiError) as live:
        api.endpoint_live("master1")
    with pytest.raises(IcingaApiError) as checked:
        api.check_access()
    assert str(live.value) == str(checked.value) == told
    assert live.value.status == checked.value.status == 403
    assert master.api().endpoint_live("no-such-endpoint") is False  # a missing endpoint is no error


def test_a_user_without_the_zone_permission_is_told_so_by_check_access(master):
    told = (f"Icinga 2 API GET /v1/objects/zones: user '{NO_ZONE_USER}' lacks the permission "
            f"objects/query/Zone: it sees no Zone, not even the master's own")
    with pytest.raises(IcingaApiError, match="objects/query/Zone") as info:
        master.api(user=NO_ZONE_USER).check_access()
    assert str(info.value) == told and info.value.status == 403


def test_zones_name_every_zone_with_its_endpoints_parent_and_package(master):
    api = master.api()
    pkg = "statesync-zones"
    api.ensure_package(pkg)
    _, result = stage_and_wait(api, pkg, {conf_path("sat-z"): zone_file("sat-z")})
    assert result.ok
    wait_live(api, "sat-z")
    zones = api.zones()
    assert zones["master"] == {"endpoints": ["master1"], "parent": "", "package": "_etc"}
    assert zones["legacy-dc"]["package"] == "_etc"  # zones.conf: never a satellite's
    assert zones["sat-z"] == {"endpoints": ["sat-z"], "parent": "master", "package": pkg}


def test_a_stage_that_is_only_validated_is_neither_activated_nor_reloaded(master):
    api = master.api()
    pkg = "statesync-validate"
    api.ensure_package(pkg)
    active, result = stage_and_wait(api, pkg, {conf_path("sat-v1"): zone_file("sat-v1")})
    assert result.ok
    wait_live(api, "sat-v1")
    before = wait_for(lambda: master.program_start(), LIVE_TIMEOUT, what="program_start")
    good = api.stage(pkg, {conf_path("sat-v2"): zone_file("sat-v2")}, activate=False)
    assert api.wait_stage(pkg, good, STAGE_TIMEOUT).ok
    bad = api.stage(pkg, {conf_path("sat-v3"): zone_file("sat-v3", parent="none")}, activate=False)
    assert not api.wait_stage(pkg, bad, STAGE_TIMEOUT).ok
    time.sleep(2)  # a reload, had one been triggered, would have begun
    assert api.packages()[pkg]["active"] == active and api.endpoint_live("sat-v2") is False
    assert master.program_start() == before


def test_a_stage_sent_while_the_last_reload_runs_waits_for_it_instead_of_failing(master):
    api = master.api()
    pkg = "statesync-busy"
    api.ensure_package(pkg)
    _, result = stage_and_wait(api, pkg, {conf_path("sat-busy1"): zone_file("sat-busy1")})
    assert result.ok
    with pytest.raises(IcingaApiError) as info:
        api.stage(pkg, {conf_path("sat-busy2"): zone_file("sat-busy2")}, busy_timeout=0)
    # 2.13 and 2.14 answer 423 (a package update still running); 2.16 503 "Icinga is reloading".
    assert info.value.status in (423, 503)
    t0 = time.monotonic()
    second = api.stage(pkg, {conf_path("sat-busy2"): zone_file("sat-busy2")})
    master.notes.append(f"Icinga {master.version()}: a stage right after status ok waited "
                        f"{time.monotonic() - t0:.2f}s for the reload ({info.value.status})")
    assert api.wait_stage(pkg, second, STAGE_TIMEOUT).ok
    wait_live(api, "sat-busy2")
    assert api.packages()[pkg]["active"] == second


# -- names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "a b", "../etc", "pkg/stage", "zöne", "a.b", None])
def test_package_names_outside_icingas_alphabet_are_refused_before_any_request(name):
    api = IcingaApi("https://127.0.0.1:1", USER, PASSWORD, "/nonexistent", timeout=0.1)
    with pytest.raises(ValueError):
        check_package(name)
    with pytest.raises(ValueError):
        api.stage(name, {})
    with pytest.raises(ValueError):
        api.ensure_package(name)


def test_stage_and_endpoint_names_cannot_reach_another_resource(master):
    api = master.api()
    assert api.endpoint_live("master1/../sat-a") is False  # one quoted path segment, not a path
    with pytest.raises(ValueError):
        api.endpoint_live("..")


def test_only_https_urls_are_accepted():
    with pytest.raises(ValueError, match="https"):
        IcingaApi("http://127.0.0.1:5665", USER, PASSWORD, "/nonexistent")


def test_a_missing_cafile_is_an_error_naming_it_not_an_outage(master, tmp_path):
    missing = tmp_path / "no-ca.crt"
    with pytest.raises(IcingaApiError, match=str(missing)) as info:
        master.api(cafile=str(missing)).packages()
    assert not isinstance(info.value, IcingaUnreachable)
