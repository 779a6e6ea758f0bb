"""The stacks of compose/ as shipped, on a real Docker Engine with stand-ins of the public
images (tests/images/): the master survives the loss of its volume, and a satellite enrols,
is re-enrolled by its guard after a CA change, and connects again.

The compose files are copied unchanged into a temporary directory (their secrets/ beside
them); only the variables the files themselves offer are set: images, network, prefix,
published port. Phase times are printed at the end of the run.

Both layouts of the official image: every scenario runs on the image from 2.16 on (the
stacks' default, VOLUME /data, no /data-init); on the 2.14 one (Go /entrypoint, /data-init)
only the master's disaster drill runs, which goes through everything the stacks do
differently for it (the /data-init copy, the Go entrypoint as PID 1). Slow: each scenario
starts stacks of several containers and real Icinga 2 (minutes in all).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ..compose_support import PhaseTimes, api, prepare_stack_dir, rotate_master_ca, sh, wait
from ..engine import (
    CONSUL,
    DEBIAN,
    ICINGA_IMAGES,
    Compose,
    container_logs,
    docker,
    inspect,
    unique_name,
    wait_healthy,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

COMPOSE_DIR = Path(__file__).resolve().parents[2] / "compose"
SIDECAR_IMAGE = "statesync:test"
MASTER = "icinga-master"
HTTP_PORT = "9470"  # not the image's 9465: the health check must follow the configuration

IDENTITY = ("openssl x509 -noout -fingerprint -sha256 -in /var/lib/icinga2/ca/ca.crt;"
            " sha256sum /etc/icinga2/constants.conf /etc/icinga2/zones.conf /etc/icinga2/conf.d/api-users.conf;"
            " readlink /etc/icinga2/features-enabled/api.conf")


class Lab:
    """One Consul stack and the stacks' directory, shared by the scenarios of this module."""

    def __init__(self, base: Path, version: str):
        self.image = ICINGA_IMAGES[version]
        self.dir = base / "compose"
        prepare_stack_dir(self.dir, ("consul.yml", "master.yml", "satellite.yml", "icinga-start.sh"))
        self.network = unique_name("ssnet")
        self.env = {
            "STATESYNC_NETWORK": self.network, "CONSUL_IMAGE": CONSUL, "ICINGA_IMAGE": self.image.tag,
            "STATESYNC_IMAGE": SIDECAR_IMAGE, "STATESYNC_PREFIX": f"test/{self.network}",
            "ICINGA_API_PUBLISH": "127.0.0.1::5665", "STATESYNC_HTTP_PORT": HTTP_PORT,
            "MASTER_NAME": MASTER, "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        }
        self.consul = self.stack("consul.yml", "statesync-consul")
        self.master = self.stack("master.yml", "icinga-master")

    def stack(self, file: str, role: str, **env: str) -> Compose:
        return Compose(self.dir / file, env={**self.env, **env}, project=unique_name(role.replace("-", "")))

    def cleanup(self) -> None:
        for stack in (self.master, self.consul):
            stack.cleanup()


def _published_matches_local(stack: Compose) -> bool:
    return stack.exec("statesync", "statesync", "check-ca", check=False, timeout=60).returncode == 0


def _icinga_log_of_last_start(stack: Compose) -> str:
    return container_logs(stack.container_id("icinga2"))


_TIMES: dict[int, PhaseTimes] = {}


@pytest.fixture(scope="module")
def lab(engine, tmp_path_factory, request):
    """One Consul stack and a master stack on the Icinga image of the version in ``request.param``."""
    version = request.param
    if os.getpid() not in _TIMES:
        _TIMES[os.getpid()] = PhaseTimes("compose stacks on a real engine: phase times")
        request.config.pluginmanager.register(_TIMES[os.getpid()], f"compose-engine-times-{os.getpid()}")
    engine.build_statesync_image(SIDECAR_IMAGE)
    lab = Lab(tmp_path_factory.mktemp(f"compose-engine-{version}"), version)
    lab.times = _TIMES[os.getpid()]
    try:
        lab.consul.up(wait=120)
        yield lab
    finally:
        lab.cleanup()


ON_BOTH = pytest.mark.parametrize("lab", ["2.16", "2.14"], indirect=True)
ON_2_16 = pytest.mark.parametrize("lab", ["2.16"], indirect=True)

# Run in the icinga2 container after a restore: the owners (uid and name in the image's own
# user database) of what the sidecar restored, and what the engine's copy of the image's
# /data left beside it.
OWNERS = ("stat -c '%u %U' /var/lib/icinga2/ca/ca.key /etc/icinga2/constants.conf | sort -u;"
          " ls -d /data/var/cache/icinga2 /data/var/log/icinga2 /data/var/spool/icinga2")


@ON_BOTH
def test_the_master_stack_comes_back_from_a_lost_volume_with_its_ca_ticket_salt_and_api(lab):
    image = lab.image
    master, phases = lab.master, lab.times.scenario(f"{image.version}: master: first start, volume lost, up again")
    t0 = time.monotonic()
    master.up(wait=None)
    api(master, "/v1/status", "HTTP200")
    phases["first_up_to_api"] = time.monotonic() - t0
    first_log = _icinga_log_of_last_start(master)
    # The sidecar started before Icinga on the new volume, yet the image's first start ran as
    # without statesync: up to 2.15 /data-init copied (certs/ included), from 2.16 the engine's
    # copy of the image's /data; node setup made the CA.
    if image.data_init:
        assert 'Copying "/data-init/var/lib/icinga2" to "/data/var/lib/icinga2"' in first_log
    assert image.node_setup_log in first_log
    sh(master, "icinga2", "test -d /var/lib/icinga2/certs && test -s /var/lib/icinga2/ca/ca.crt")
    wait(lambda: _published_matches_local(master), 120, "the sidecar did not publish the master's CA",
          master.logs)
    phases["first_up_to_published"] = time.monotonic() - t0
    # The health check asks the configured port (9470 here), not the image's default.
    wait_healthy(master.container_id("statesync"), 90)
    before = sh(master, "icinga2", IDENTITY)
    assert "api.conf" in before

    t1 = time.monotonic()
    master.compose("stop", "-t", "30", timeout=120)  # the sidecar's last commit on SIGTERM
    # Icinga 2 wrote its program state as it stopped, and compose stopped the sidecar right
    # after it: that version must be the one the rebuilt master gets back.
    state_at_stop = docker("run", "--rm", "--network", "none", "-v", f"{master.project}_icinga-master:/data:ro",
                           DEBIAN, "sha256sum", "/data/var/lib/icinga2/icinga2.state").stdout.split()[0]
    master.down(volumes=True)  # the Icinga volume: the backups live in another stack
    assert not docker("volume", "ls", "-q", "--filter",
                      f"label=com.docker.compose.project={master.project}").stdout.split()
    phases["stop_and_down_v"] = time.monotonic() - t1

    t2 = time.monotonic()
    master.up(wait=None)
    api(master, "/v1/status", "HTTP200")
    phases["up_after_loss_to_api"] = time.monotonic() - t2
    after = sh(master, "icinga2", IDENTITY)
    assert after == before, "CA, TicketSalt (constants.conf), zones, API users or the api feature differ"
    # Icinga 2 rewrites the file only at its next periodic dump, minutes from now.
    assert sh(master, "icinga2", "sha256sum /var/lib/icinga2/icinga2.state").split()[0] == state_at_stop, \
        "the program state Icinga 2 wrote as it stopped was not in the sidecar's last commit"
    second_log = _icinga_log_of_last_start(master)
    assert image.node_setup_log not in second_log
    assert 'Copying "/data-init/etc/icinga2"' not in second_log
    assert 'Copying "/data-init/var/lib/icinga2"' not in second_log
    sidecar_log = container_logs(master.container_id("statesync"))
    ready = [json.loads(line) for line in sidecar_log.splitlines()
             if line.startswith("{") and '"ready"' in line]
    assert ready and ready[-1].get("action") == "restored", sidecar_log[-3000:]
    assert _published_matches_local(master)
    # The sidecar restores by owner name in its own user database; both images' icinga is 5665.
    owners = sh(master, "icinga2", OWNERS).split("\n")
    assert owners[0] == "5665 icinga" and len([o for o in owners if o.startswith("5665")]) == 1, owners
    if not image.data_init:
        # The order: the engine copied the image's /data into the new volume first (created
        # with the one-shot icinga2-volume container), then the sidecar restored over it and
        # moved the image's defaults aside; the rest of the copy (var/cache, var/log,
        # var/spool) stays. A sidecar first on the volume would have left no defaults to move.
        aside = sh(master, "icinga2", "ls -d /data/.statesync-aside/*/var/lib/icinga2/certs"
                                      " /data/.statesync-aside/*/etc/icinga2/icinga2.conf").split()
        assert len(aside) == 2, aside
    phases["total"] = time.monotonic() - t0


@ON_2_16
def test_the_engine_fills_the_new_volume_from_the_image_before_the_sidecar_starts(lab):
    # The order the stacks rely on from 2.16 on, with nothing to restore (a first start): the
    # engine copies the image's /data only into an EMPTY volume, at the creation of a container
    # that mounts it. Started alone, the sidecar must already find the image's tree: were it
    # first, its .statesync-* files would make the volume non-empty, the engine would copy
    # nothing when the icinga2 container is created, and Icinga 2 would find no configuration.
    stack = lab.stack("master.yml", "icinga-order", MASTER_NAME="icinga-order",
                      STATESYNC_PREFIX=f"test/{lab.network}-order")
    with stack:
        stack.up("statesync", wait=None)
        wait(lambda: stack.exec("statesync", "statesync", "ready", check=False, timeout=60).returncode == 0,
             120, "the sidecar did not become ready", stack.logs)
        assert not stack.container_ids("icinga2")
        listing = docker("run", "--rm", "-v", f"{stack.project}_icinga-master:/data", DEBIAN, "sh", "-c",
                         "ls -A /data; stat -c '%u' /data/etc/icinga2/icinga2.conf", check=False).stdout.split()
        assert {".statesync-ready", "etc", "var"} <= set(listing), listing
        assert listing[-1] == "5665", listing
        stack.up("icinga2", wait=None)
        api(stack, "/v1/status", "HTTP200")
        assert lab.image.node_setup_log in _icinga_log_of_last_start(stack)


@ON_2_16
def test_icinga_waits_for_statesync_even_when_compose_starts_it_alone(lab, tmp_path):
    # podman-compose 1.0.3 ignores depends_on conditions: icinga2 must wait for the ready
    # marker itself, or it makes a new CA on a volume statesync has not restored yet.
    stack = lab.stack("master.yml", "icinga-alone", MASTER_NAME="icinga-alone",
                      STATESYNC_PREFIX=f"test/{lab.network}-alone")
    with stack:
        stack.compose("up", "-d", "--no-deps", "icinga2")
        icinga = stack.container_id("icinga2")
        time.sleep(8)
        assert inspect(icinga)["State"]["Running"], container_logs(icinga)
        # From 2.16 on the engine filled the volume with the image's /data, and nothing more:
        # no CA, no certificate, no node setup.
        found = docker("run", "--rm", "-v", f"{stack.project}_icinga-master:/data", DEBIAN, "sh", "-c",
                       "ls -A /data; find /data -name '*.crt' -o -name '*.key'").stdout.split()
        assert found == ["etc", "var"], f"Icinga touched the volume before statesync was ready: {found}"
        assert "waiting for statesync" in container_logs(icinga)
        stack.up("statesync", wait=None)
        api(stack, "/v1/status", "HTTP200")


@ON_2_16
def test_an_empty_icinga_cacert_leaves_no_zero_byte_ca_and_a_left_one_is_removed(lab):
    image = lab.image.tag
    volume = unique_name("ssvol")
    marker = "touch /data/.statesync-ready"
    wrapper = f"{lab.dir / 'icinga-start.sh'}:/statesync/icinga-start.sh:ro"
    try:
        docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", image, "-c", marker)
        first = docker("run", "--rm", "-v", f"{volume}:/data", "-v", wrapper, "-e", "ICINGA_CACERT=",
                       "-e", "ICINGA_MASTER=1", "-e", "ICINGA_CN=m", "--entrypoint", "/bin/sh", image,
                       "/statesync/icinga-start.sh", "sh", "-c", "wc -c < /var/lib/icinga2/certs/ca.crt",
                       check=False, timeout=120)
        assert first.returncode == 0, first.stderr[-3000:]
        assert int(first.stdout.split()[-1]) > 0, "ca.crt is empty"
        # A volume that an earlier, broken start left with a 0-byte ca.crt enrols again.
        docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", image, "-c",
               "rm -rf /data/var/lib/icinga2/ca /data/var/lib/icinga2/certs/*"
               " && : > /data/var/lib/icinga2/certs/ca.crt")
        second = docker("run", "--rm", "-v", f"{volume}:/data", "-v", wrapper, "-e", "ICINGA_MASTER=1",
                        "-e", "ICINGA_CN=m", "--entrypoint", "/bin/sh", image, "/statesync/icinga-start.sh",
                        "sh", "-c", "wc -c < /var/lib/icinga2/certs/ca.crt", check=False, timeout=120)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "removing the empty" in second.stderr and lab.image.node_setup_log in second.stderr
        assert int(second.stdout.split()[-1]) > 0
    finally:
        docker("volume", "rm", "-f", volume, check=False)


@ON_2_16
def test_icinga_log_level_reaches_icinga_behind_the_wrapper(lab):
    # The 2.16 entrypoint appends --log-level only when its command is icinga2 itself; behind
    # icinga-start.sh its command is the wrapper's second stage, which appends it instead.
    volume = unique_name("ssvol")
    wrapper = f"{lab.dir / 'icinga-start.sh'}:/statesync/icinga-start.sh:ro"
    try:
        docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", lab.image.tag, "-c",
               "touch /data/.statesync-ready")
        runs = {}
        for level in ("warning", "information"):
            runs[level] = docker("run", "--rm", "-v", f"{volume}:/data", "-v", wrapper, "-e", f"ICINGA_LOG_LEVEL={level}",
                                 "--entrypoint", "/bin/sh", lab.image.tag, "/statesync/icinga-start.sh",
                                 "icinga2", "daemon", "-C", check=False, timeout=120)
            assert runs[level].returncode == 0, runs[level].stderr[-3000:]
        assert "information/cli" not in runs["warning"].stdout + runs["warning"].stderr
        assert "information/cli" in runs["information"].stdout + runs["information"].stderr
    finally:
        docker("volume", "rm", "-f", volume, check=False)


@ON_2_16
def test_a_volume_first_mounted_by_statesync_belongs_to_the_icinga_user(lab):
    volume = unique_name("ssvol")
    try:
        docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", SIDECAR_IMAGE, "-c", "true")
        # Read from an image without /data: the engine copies nothing from it, owner included.
        owner = docker("run", "--rm", "-v", f"{volume}:/data", DEBIAN, "stat", "-c", "%u:%g", "/data").stdout.strip()
        assert owner == "5665:5665"
    finally:
        docker("volume", "rm", "-f", volume, check=False)


@ON_2_16
def test_a_satellite_enrols_is_re_enrolled_after_a_ca_change_and_connects_again(lab):
    master, phases = lab.master, lab.times.scenario(f"{lab.image.version}: satellite: enrol, CA change, re-enrol")
    if not master.container_ids("icinga2"):
        master.up(wait=None)
    api(master, "/v1/status", "HTTP200")
    sat = unique_name("sat")
    # No ticket, no zones.conf edit on the master: the satellite enrols through Consul.
    satellite = lab.stack("satellite.yml", "sat", SATELLITE_NAME=sat, MASTER_HOST=MASTER)
    with satellite:
        t0 = time.monotonic()
        satellite.up(wait=None)
        api(master, f"/v1/objects/endpoints/{sat}", '"connected":true', tries=120)
        phases["up_to_connected"] = time.monotonic() - t0
        sat_icinga = satellite.container_id("icinga2")
        assert inspect(sat_icinga)["RestartCount"] == 0, container_logs(sat_icinga)[-3000:]
        # It enrolled through Consul: registered by its sidecar, accepted and signed by the master's.
        first_log = container_logs(sat_icinga)
        assert lab.image.node_setup_log in first_log and "--ticket" not in first_log
        # Icinga 2 started with the signed certificate: icinga-start.sh asked until statesync had it signed.
        assert f"certificate of {sat} signed after" in first_log, first_log[-3000:]
        assert "registered for enrolment" in container_logs(satellite.container_id("statesync"))
        master_log = container_logs(master.container_id("statesync"))
        assert "accepted satellites staged" in master_log and "certificate request signed" in master_log
        listing = master.exec("statesync", "statesync", "satellites", check=False, timeout=60)
        assert listing.returncode == 0 and sat in listing.stdout and "connected" in listing.stdout, listing
        old_ca = sh(satellite, "icinga2", "openssl x509 -noout -fingerprint -sha256 "
                                           "-in /var/lib/icinga2/certs/ca.crt")

        # The master's operator rotates the CA (same TicketSalt), restarts Icinga 2 and
        # records the decision; the master sidecar then publishes the new CA once.
        t1 = time.monotonic()
        new_ca = rotate_master_ca(master, MASTER)
        phases["rotation_to_published"] = time.monotonic() - t1
        assert new_ca != old_ca

        t2 = time.monotonic()
        wait(lambda: sh(satellite, "icinga2", "openssl x509 -noout -fingerprint -sha256 "
                                                "-in /var/lib/icinga2/certs/ca.crt", check=False) == new_ca,
              240, "the satellite did not enrol again under the new CA",
              lambda: satellite.logs() + master.logs("icinga2"))
        phases["published_to_re_enrolled"] = time.monotonic() - t2
        api(master, f"/v1/objects/endpoints/{sat}", '"connected":true', tries=120)
        phases["published_to_connected"] = time.monotonic() - t2
        guard_log = container_logs(satellite.container_id("statesync"))
        assert "certificates quarantined" in guard_log and "restart triggered" in guard_log
        # One restart by the guard, no restart loop.
        assert inspect(satellite.container_id("icinga2"))["RestartCount"] <= 1
        phases["total"] = time.monotonic() - t0
