"""The Swarm satellites of compose/swarm/ on a real single-node Swarm (Docker Engine 20.10)
with the stand-in images (tests/images/): the stack deploys as shipped, each slot gets its
own host name and volume, it enrols through Consul without a ticket, the master sees it connected, the
health check follows the configured port, and a task stop reaches the sidecar.

Each defect of the first Swarm setup has a test here that fails on those files:
- "build: ignored / No such image": test_the_stack_file_names_an_image_it_does_not_build and
  the deploy output checked in the live test ("Ignoring unsupported options: build");
- "no parent host / pinned parent, Icinga exits 1, task restart loop":
  test_satellites_enrol_against_a_pinned_parent_they_are_told_about and, live, no task of
  the service failed or restarted before its satellite connected;
- "every satellite handed the TicketSalt": test_no_task_is_handed_the_ticket_salt (no
  ticket either) and, live, each slot registered in Consul and accepted by the master's sidecar;
- "SIGTERM never reaches the sidecar": test_a_task_stop_reaches_the_sidecar (fast, the
  real entrypoint chain with a stand-in sidecar) and, live, the stopped task's sidecar
  commits what Icinga 2 wrote while shutting down (icinga2.state) and then logs "stopped".
Live, slot 1 is then rescheduled onto an empty volume: it restores from Consul (its
certificates and that program state) and connects without enrolling again; then the master's
CA changes, and slot 1's guard sends it to enrol again under the new CA (task restart).
STATESYNC_TEST_SWARM_DIR points these tests at another copy of compose/swarm (e.g. the
old files: satellites.yml, Dockerfile, entrypoint.sh, supervise.sh) to see that.
The satellite image is built on the Icinga 2 image from 2.16 on (the stacks' default: VOLUME
/data, the engine fills each slot's new volume with the image's tree before the entrypoint
restores over it); the stop-signal chain is also checked on the 2.14 layout (Go /entrypoint).

The engine's swarm mode is left as found: a test that had to `docker swarm init` leaves
the swarm again. Everything else is removed by name or ID in finally blocks.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from ..compose_support import COMPOSE_DIR, PhaseTimes, api, prepare_stack_dir, rotate_master_ca, wait
from ..engine import (
    CONSUL,
    ICINGA_IMAGES,
    ROOT,
    Compose,
    EngineError,
    _run,
    container_logs,
    docker,
    inspect,
    unique_name,
    wait_healthy,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

SWARM_DIR = Path(os.environ.get("STATESYNC_TEST_SWARM_DIR") or COMPOSE_DIR / "swarm")
SIDECAR_IMAGE = "statesync:test"
SATELLITE_IMAGE = "statesync-test/swarm-satellite:test"
IMAGE = ICINGA_IMAGES["2.16"]
PIP_CA_BASE = "statesync-test/icinga2-pip-ca:2.16"
MASTER = "icinga-master"
HTTP_PORT = "9470"  # not the default 9465: the health check must follow the configuration
REPLICAS = 2

# --------------------------------------------------------------------------- helpers

def _stack_doc() -> dict:
    return yaml.safe_load((SWARM_DIR / "satellites.yml").read_text())


def _service() -> dict:
    services = _stack_doc()["services"]
    assert len(services) == 1, services
    return next(iter(services.values()))


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


def _timed_logs(container_id: str) -> list[str]:
    """The container's stdout and stderr lines merged in the order the engine logged them
    (container_logs gives all of stdout, then all of stderr)."""
    proc = docker("logs", "-t", container_id, check=False)
    stamped = [line.split(" ", 1) for line in (proc.stdout + proc.stderr).splitlines() if " " in line]
    return [text for _, text in sorted(stamped, key=lambda pair: pair[0])]


# --------------------------------------------------------------------------- static checks

def test_the_stack_file_names_an_image_it_does_not_build():
    # `docker stack deploy` ignores build: ("Ignoring unsupported options: build") and the
    # tasks then fail with "No such image"; the image is built beforehand and named by a
    # variable, so a registry path can be given without editing the file.
    service = _service()
    assert "build" not in service, "docker stack deploy ignores build:"
    assert "${SATELLITE_IMAGE" in service["image"], service["image"]
    dockerfile = (SWARM_DIR / "Dockerfile").read_text()
    assert "ARG ICINGA_IMAGE" in dockerfile and "FROM ${ICINGA_IMAGE}" in dockerfile


def test_satellites_enrol_against_a_pinned_parent_they_are_told_about():
    # Without a parent host node setup cannot ask for a certificate: Icinga 2 exits 1 and
    # Swarm restarts the task for ever. The parent's certificate is pinned by statesync
    # (checked against the CA the master published), not a fixed ICINGA_CACERT.
    env = _env(_service())
    assert "MASTER_HOST" in env.get("ICINGA_PARENT_HOST", ""), env
    assert env.get("ICINGA_PARENT_ZONE"), env
    assert "MASTER_HOST" in env.get("STATESYNC_GUARD_PARENT_HOST", ""), env
    assert env.get("STATESYNC_GUARD_TRUSTED_PARENT_FILE", "").startswith("/data/"), env
    assert "STATESYNC_PREFIX" in env, "the satellites must read the CA under the master's prefix"
    entry = (SWARM_DIR / "entrypoint.sh").read_text()
    assert "statesync pin-parent" in entry and "ICINGA_TRUSTEDCERT" in entry


def test_no_task_is_handed_the_ticket_salt():
    service = _service()
    doc = _stack_doc()
    names = [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]
    assert not [n for n in names if "salt" in n.lower()], names
    assert not [n for n in doc.get("secrets", {}) if "salt" in n.lower()]
    # Issue 18: no tickets either; a slot enrols through Consul.
    assert not [n for n in names if "ticket" in n.lower()], names
    assert not [k for k in _env(service) if "SALT" in k.upper() or "TICKET" in k.upper()]
    assert _env(service).get("STATESYNC_ENROL_ENABLED") == "1"
    entry = (SWARM_DIR / "entrypoint.sh").read_text()
    assert "pbkdf2" not in entry.lower() and "salt" not in entry.lower() and "ICINGA_TICKET" not in entry


def test_the_secrets_are_readable_by_the_icinga_user_only():
    for secret in _service().get("secrets", []):
        assert isinstance(secret, dict), f"{secret}: Swarm mounts it root-owned, 0444 (no uid/gid/mode)"
        assert (str(secret.get("uid")), str(secret.get("gid")), secret.get("mode")) == ("5665", "5665", 0o400), secret


def test_docker_compose_reads_the_stack_file():
    proc = _run(["/usr/bin/docker-compose", "-f", SWARM_DIR / "satellites.yml", "config"], check=False,
                env={"MASTER_HOST": MASTER}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = yaml.safe_load(proc.stdout)
    sat = cfg["services"]["satellite"]
    assert sat["hostname"] == "satellite-{{.Task.Slot}}"
    assert cfg["volumes"]["icinga-sat"]["name"] == "icinga-sat-{{.Task.Slot}}"


# --------------------------------------------------------------------------- engine

@pytest.fixture(scope="module")
def swarm(engine):
    """A single-node Swarm: the engine's own if it is in one, else initialised and left again."""
    before = _swarm_state()
    if before not in ("active", "inactive"):
        pytest.fail(f"the engine's swarm state is {before!r}: neither active nor inactive", pytrace=False)
    if before == "inactive":
        try:
            docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
        except EngineError as exc:
            pytest.fail(f"docker swarm init failed: {exc}", pytrace=False)
    try:
        yield
    finally:
        if before == "inactive":
            docker("swarm", "leave", "--force", check=False, timeout=120)


@pytest.fixture(scope="module")
def satellite_image(engine, tmp_path_factory):
    """compose/swarm/Dockerfile built as shipped on the Icinga 2 stand-in.

    Test-only: pip inside the build reaches PyPI through this machine's intercepting proxy,
    whose CA is the host's bundle. The shipped Dockerfile stays free of it: the bundle goes
    into a tiny base image derived from the stand-in (PIP_CERT set there), which is passed
    as ICINGA_IMAGE; the satellite image built on it is otherwise what users build.
    """
    ctx = tmp_path_factory.mktemp("pip-ca-base")
    shutil.copy(Path("/etc/ssl/certs/ca-certificates.crt"), ctx / "host-ca-bundle.crt")
    (ctx / "Dockerfile").write_text(
        f"FROM {IMAGE.tag}\nUSER root\n"
        "COPY host-ca-bundle.crt /etc/ssl/certs/test-host-ca-bundle.crt\n"
        "ENV PIP_CERT=/etc/ssl/certs/test-host-ca-bundle.crt\nUSER icinga\n")
    docker("build", "-q", "-t", PIP_CA_BASE, str(ctx), timeout=300)
    # The repository's build context, with compose/swarm/ taken from SWARM_DIR.
    src = tmp_path_factory.mktemp("swarm-context")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "statesync", src / "statesync", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SWARM_DIR, src / "compose" / "swarm")
    docker("build", "--force-rm", "--network", "host", "-f", str(src / "compose" / "swarm" / "Dockerfile"),
           "--build-arg", f"ICINGA_IMAGE={PIP_CA_BASE}", "-t", SATELLITE_IMAGE, str(src), timeout=900)
    return SATELLITE_IMAGE


FAKE_STATESYNC = """#!/bin/sh
# Stand-in for statesync: start-up steps succeed, "run" reports the signal it gets.
case "$1" in
  run) trap 'echo "fake-sidecar: SIGTERM reached, final commit" >&2; exit 0' TERM
       echo "fake-sidecar: running" >&2
       while :; do sleep 0.2; done ;;
  *) exit 0 ;;
esac
"""
FAKE_ICINGA = "trap 'echo fake-icinga: SIGTERM >&2; exit 0' TERM; echo fake-icinga: running >&2; while :; do sleep 0.2; done"


def _chain_mounts(tmp_path: Path) -> list[str]:
    """-v arguments that put the task's scripts over an Icinga image, with a stand-in statesync
    and an enrolled node's ca.crt (the image's entrypoint then skips node setup)."""
    fake = tmp_path / "statesync"
    fake.write_text(FAKE_STATESYNC)
    fake.chmod(0o755)
    ca = tmp_path / "ca.crt"
    ca.write_text("enrolled\n")
    ca.chmod(0o644)
    mounts = []
    for src, dst in ((SWARM_DIR / "entrypoint.sh", "/usr/local/bin/statesync-entrypoint"),
                     (SWARM_DIR / "supervise.sh", "/usr/local/bin/statesync-supervise"),
                     (fake, "/usr/local/bin/statesync"), (fake, "/opt/statesync/bin/statesync"),
                     (ca, "/data/var/lib/icinga2/certs/ca.crt")):
        if src.exists():
            mounts += ["-v", f"{src}:{dst}:ro"]
    return mounts


def test_icinga_log_level_reaches_icinga_in_a_task(engine, tmp_path):
    # The 2.16 entrypoint appends --log-level only when its command is icinga2 itself; in a
    # task its command is supervise.sh, which appends it instead. Icinga 2 only validates here.
    runs = {}
    for level in ("warning", "information"):
        runs[level] = docker("run", "--rm", "-u", "0", *_chain_mounts(tmp_path), "-e", f"ICINGA_LOG_LEVEL={level}",
                             "-e", "STATESYNC_SUPERVISE_SETTLE=0", "--entrypoint", "/usr/local/bin/statesync-entrypoint",
                             IMAGE.tag, "icinga2", "daemon", "-C", check=False, timeout=120)
        assert runs[level].returncode == 0, runs[level].stdout[-2000:] + runs[level].stderr[-2000:]
    assert "information/cli" not in runs["warning"].stdout + runs["warning"].stderr
    assert "information/cli" in runs["information"].stdout + runs["information"].stderr


@pytest.mark.parametrize("version", ["2.16", "2.14"])
def test_a_task_stop_reaches_the_sidecar(engine, tmp_path, version):
    """The task's real chain, entrypoint.sh -> the image's entrypoint (up to 2.15 /entrypoint as
    PID 1, which runs dumb-init -c; from 2.16 dumb-init -c -> entrypoint.sh) -> supervise.sh, with stand-ins for statesync and Icinga 2: `docker stop` must reach the
    sidecar (before, dumb-init forwarded SIGTERM to Icinga 2 only and the sidecar was killed)."""
    mounts = _chain_mounts(tmp_path)
    name = unique_name("sssig")
    try:
        # As root: the bind mounts leave /data/var root-owned, where the image's entrypoint copies.
        docker("run", "-d", "--name", name, "-u", "0", *mounts, "-e", "ICINGA_CN=satellite-1",
               "-e", "STATESYNC_ROOT=/data/var/lib/icinga2", "--entrypoint", "/usr/local/bin/statesync-entrypoint",
               ICINGA_IMAGES[version].tag, "sh", "-c", FAKE_ICINGA)
        wait(lambda: "fake-sidecar: running" in container_logs(name) and "fake-icinga: running" in container_logs(name),
              30, "the stand-ins did not start", lambda: container_logs(name))
        t0 = time.monotonic()
        docker("stop", "-t", "20", name, timeout=60)
        took = time.monotonic() - t0
        logs = container_logs(name)
        assert "fake-sidecar: SIGTERM reached, final commit" in logs, logs
        assert "fake-icinga: SIGTERM" in logs, logs
        print(f"the task stopped {took:.1f} s after docker stop (not a pass mark)")
        # Killed at the grace period's end, it would exit 137 (SIGKILL), however fast the machine.
        assert inspect(name)["State"]["ExitCode"] == 0, f"stopped after {took:.1f} s\n{logs}"
    finally:
        # -v: the 2.16 image declares VOLUME /data, an anonymous volume here.
        docker("rm", "-f", "-v", name, check=False)


def test_satellites_stack_enrols_connects_reports_healthy_and_commits_on_stop(
        swarm, satellite_image, tmp_path, request):
    times = PhaseTimes("swarm satellites on a real engine: phase times")
    request.config.pluginmanager.register(times, f"swarm-engine-times-{os.getpid()}")
    phases = times.scenario("satellites: deploy, enrol, healthy, stop, restore")
    t_all = time.monotonic()
    net = unique_name("ssswnet")
    stack = unique_name("sssw")
    service = f"{stack}_satellite"
    slots = [str(i) for i in range(1, REPLICAS + 1)]
    cns = {slot: f"satellite-{slot}" for slot in slots}
    volumes = [f"icinga-sat-{slot}" for slot in slots]
    secrets = {k: f"{stack}_{k}" for k in ("consul_token", "statesync_key")}
    prefix = f"test/{net}"

    for vol in volumes:  # a left-over of an aborted run would hold old state
        if docker("volume", "inspect", vol, check=False).returncode == 0:
            rm = docker("volume", "rm", vol, check=False)
            assert rm.returncode == 0, f"volume {vol} exists and is in use: {rm.stderr}"

    work = tmp_path / "compose"
    sec = prepare_stack_dir(work, ("consul.yml", "master.yml", "icinga-start.sh"))
    # Compose 1.29 reuses the attachable overlay network created below for the Consul stack
    # (the override replaces the network's whole entry: its name is given again).
    # On an overlay network a container also gets an address on docker_gwbridge, and Consul
    # refuses to pick one of several private addresses: bind it to the overlay's interface,
    # as the official image's CONSUL_BIND_INTERFACE offers.
    (work / "consul-overlay.yml").write_text(
        "services:\n  consul:\n    environment:\n      CONSUL_BIND_INTERFACE: eth0\n"
        f"networks:\n  statesync:\n    name: {net}\n    driver: overlay\n    attachable: true\n")
    env = {"STATESYNC_NETWORK": net, "CONSUL_IMAGE": CONSUL, "ICINGA_IMAGE": IMAGE.tag,
           "STATESYNC_IMAGE": SIDECAR_IMAGE, "STATESYNC_PREFIX": prefix, "ICINGA_API_PUBLISH": "127.0.0.1::5665",
           "STATESYNC_HTTP_PORT": HTTP_PORT, "MASTER_NAME": MASTER}
    consul = Compose(work / "consul.yml", work / "consul-overlay.yml", env=env, project=unique_name("ssswconsul"))
    master = Compose(work / "master.yml", env=env, project=unique_name("ssswmaster"))
    # The test's override only attaches the service to the network, renames the secrets
    # (Swarm's names are global on the engine) and runs two slots.
    override = tmp_path / "override.yml"
    override.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"satellite": {"networks": ["statesync"], "deploy": {"replicas": REPLICAS}}},
        "networks": {"statesync": {"external": True, "name": net}},
        "secrets": {k: {"external": True, "name": v} for k, v in secrets.items()},
    }))
    deploy_env = {"SATELLITE_IMAGE": satellite_image, "MASTER_NAME": MASTER, "MASTER_HOST": MASTER,
                  "STATESYNC_CONSUL_ADDR": "http://consul:8500", "STATESYNC_PREFIX": prefix,
                  "STATESYNC_HTTP_PORT": HTTP_PORT}

    def service_tasks() -> list[dict]:
        out = docker("service", "ps", "--no-trunc", "--format", "{{json .}}", service, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def task_containers() -> dict[str, str]:
        """slot -> running container ID of the service."""
        out = docker("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={service}").stdout
        found = {}
        for cid in out.split():
            labels = inspect(cid)["Config"]["Labels"]
            found[labels["com.docker.swarm.task.name"].split(".")[1]] = cid
        return found

    def details() -> str:
        out = [json.dumps(t) for t in service_tasks()]
        for cid in docker("ps", "-aq", "--no-trunc", "--filter",
                          f"label=com.docker.swarm.service.name={service}", check=False).stdout.split():
            out.append(f"--- {cid[:12]} ---\n{container_logs(cid)[-3000:]}")
        return "\n".join(out)

    created_secrets = []
    try:
        docker("network", "create", "-d", "overlay", "--attachable", net)
        consul.up(wait=120)
        t0 = time.monotonic()
        master.up(wait=None)
        api(master, "/v1/status", "HTTP200")
        wait(lambda: master.exec("statesync", "statesync", "check-ca", check=False, timeout=60).returncode == 0,
              120, "the master's sidecar did not publish its CA", master.logs)
        phases["master_up_to_ca_published"] = time.monotonic() - t0

        # No operator step on the master: no zones.conf edit, no ticket. The slots enrol through Consul.
        for key, payload in (("consul_token", "no-acl-in-this-lab\n"),
                             ("statesync_key", (sec / "statesync_key").read_text())):
            docker("secret", "create", secrets[key], "-", input=payload)
            created_secrets.append(secrets[key])

        t1 = time.monotonic()
        deployed = _run(["/usr/bin/docker", "stack", "deploy", "--resolve-image", "never",
                         "-c", SWARM_DIR / "satellites.yml", "-c", override, stack], env=deploy_env, check=False,
                        timeout=120)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "Ignoring unsupported options" not in deployed.stdout + deployed.stderr, deployed.stderr

        for cn in cns.values():
            api(master, f"/v1/objects/endpoints/{cn}", '"connected":true', tries=180)
        phases["deploy_to_all_connected"] = time.monotonic() - t1

        running = task_containers()
        assert sorted(running) == slots, details()
        # The health check runs `statesync health`, which asks the configured port (9470).
        # Swarm reports a task "Starting" until its health check first passes.
        t2 = time.monotonic()
        for cid in running.values():
            wait_healthy(cid, 180)
            probe = inspect(cid)["State"]["Health"]["Log"][-1]["Output"]
            assert f":{HTTP_PORT}/healthz" in probe, probe
        phases["connected_to_healthy"] = time.monotonic() - t2
        # Swarm's agent reports a task Running some time after its container's health check passed
        # (up to seconds on a loaded machine): wait for that report, or for a task that failed.
        wait(lambda: all(t["CurrentState"].startswith("Running") or t["Error"] for t in service_tasks()),
             120, "swarm reporting every task Running", details)
        tasks = service_tasks()
        # One task per slot, none failed, rejected or restarted on the way ("No such image",
        # node setup exiting 1 without a parent...).
        assert len(tasks) == REPLICAS, details()
        for task in tasks:
            assert task["CurrentState"].startswith("Running") and not task["Error"], details()
        for slot, cid in running.items():
            info = inspect(cid)
            assert info["Config"]["Hostname"] == f"satellite-{slot}"
            vols = [m["Name"] for m in info["Mounts"] if m["Type"] == "volume" and m["Destination"] == "/data"]
            assert vols == [f"icinga-sat-{slot}"], info["Mounts"]
            stats = docker("exec", cid, "sh", "-c", "stat -L -c '%n %u %g %a' /run/secrets/*"
                           " && cat /run/secrets/statesync_key >/dev/null && id -u").stdout.splitlines()
            assert stats[-1] == "5665", stats  # the task's user, who has just read its secrets
            lines = [s.split() for s in stats if s.startswith("/run/secrets/")]
            assert sorted(s[0] for s in lines) == sorted(f"/run/secrets/{k}" for k in secrets), stats
            assert all(s[1:] == ["5665", "5665", "400"] for s in lines), stats
            # This slot enrolled through Consul (no ticket) against the parent statesync pinned.
            logs = container_logs(cid)
            assert IMAGE.node_setup_log in logs and "registered for enrolment" in logs, logs[-3000:]
            # signed before Icinga 2 started (supervise.sh's `statesync enrol --wait`), not at its retries
            assert "enrolled: " in logs, logs[-3000:]
            assert docker("exec", cid, "test", "-s", "/data/.statesync-parent.crt", check=False).returncode == 0
            # The guard's signal trigger reads Icinga 2's pid there (2.16 keeps /run/icinga2 in the
            # image, not under /data: the old /data/var/run/icinga2 path did not exist).
            pidfile = _env(_service())["STATESYNC_GUARD_PIDFILE"]
            pid = docker("exec", cid, "sh", "-c", f"cat {pidfile}", check=False)
            assert pid.returncode == 0 and pid.stdout.strip().isdigit(), pid.stderr
            assert docker("exec", cid, "sh", "-c", f"grep -q icinga2 /proc/{pid.stdout.strip()}/cmdline",
                          check=False).returncode == 0
            assert docker("exec", cid, "test", "-s", f"/data/var/lib/icinga2/certs/{cns[slot]}.crt",
                          check=False).returncode == 0

        # A task stop: SIGTERM must reach the sidecar, which stops cleanly after its commits.
        t3 = time.monotonic()
        docker("service", "scale", "--detach", f"{service}=0")
        for slot, cid in running.items():
            wait(lambda cid=cid: inspect(cid)["State"]["Status"] in ("exited", "dead"), 60,
                  f"the task of slot {slot} did not stop", details)
        phases["stop_to_exited"] = time.monotonic() - t3
        for slot, cid in running.items():
            lines = _timed_logs(cid)
            logs = "\n".join(lines)
            stopped = [i for i, line in enumerate(lines) if '"event": "stopped"' in line]
            assert stopped, f"slot {slot}: the sidecar never logged its clean stop:\n{logs[-4000:]}"
            # Icinga 2 stopped first; the program state it wrote while shutting down
            # (icinga2.state) is in the sidecar's last commit, made before it stopped.
            down = [i for i, line in enumerate(lines) if "Icinga has shut down" in line]
            assert down, f"slot {slot}: Icinga 2 did not shut down on the stop signal:\n{logs[-4000:]}"
            assert any('"event": "committed"' in line for line in lines[down[-1]:stopped[-1]]), \
                f"slot {slot}: no commit between Icinga's shutdown and the sidecar's stop:\n{logs[-4000:]}"
            assert inspect(cid)["State"]["ExitCode"] == 0, logs[-3000:]

        # Slot 1 rescheduled onto an empty volume (another host, a lost volume): the
        # entrypoint restores its certificates from Consul instead of enrolling again.
        old = running["1"]
        docker("rm", "-f", "-v", old)  # its volume is still in use by the stopped container
        docker("volume", "rm", "icinga-sat-1")
        api(master, f"/v1/objects/endpoints/{cns['1']}", '"connected":false', tries=60)
        t4 = time.monotonic()
        docker("service", "scale", "--detach", f"{service}=1")
        api(master, f"/v1/objects/endpoints/{cns['1']}", '"connected":true', tries=180)
        phases["empty_volume_to_connected"] = time.monotonic() - t4
        again = task_containers()
        assert list(again) == ["1"] and again["1"] != old, details()
        logs = container_logs(again["1"])
        assert "restored snapshot" in logs, logs[-4000:]
        # The program state Icinga 2 wrote while stopping came back with the last commit.
        assert "Restoring program state from file '/var/lib/icinga2/icinga2.state'" in logs, logs[-4000:]
        assert IMAGE.node_setup_log not in logs, logs[-4000:]
        assert 'Copying "/data-init/var/lib/icinga2"' not in logs, logs[-4000:]
        assert 'Copying "/data-init/etc/icinga2"' not in logs, logs[-4000:]

        # The master's CA changes: slot 1's guard quarantines its certificates and signals
        # Icinga 2, the task ends and Swarm restarts it; its entrypoint must not restore the
        # old CA's certificates (certs/ is empty now, the quarantine says why) but enrol again.
        def slot_ca() -> str:
            cid = task_containers().get("1")
            if not cid:
                return ""
            return docker("exec", cid, "openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                          "/data/var/lib/icinga2/certs/ca.crt", check=False).stdout

        old_ca = slot_ca()
        t5 = time.monotonic()
        new_ca = rotate_master_ca(master, MASTER)
        assert new_ca and new_ca != old_ca
        wait(lambda: slot_ca() == new_ca, 300, "slot 1 did not enrol again under the new CA", details)
        api(master, f"/v1/objects/endpoints/{cns['1']}", '"connected":true', tries=180)
        phases["ca_published_to_connected"] = time.monotonic() - t5
        healed = task_containers()["1"]
        assert healed != again["1"], details()
        assert "certificates quarantined" in container_logs(again["1"]), container_logs(again["1"])[-4000:]
        logs = container_logs(healed)
        assert "nothing restored" in logs and IMAGE.node_setup_log in logs, logs[-4000:]
        phases["total"] = time.monotonic() - t_all
        print("swarm phase times: " + ", ".join(f"{k}={v:.1f}s" for k, v in phases.items()))
    finally:
        docker("stack", "rm", stack, check=False, timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and docker(
                "ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={service}", check=False).stdout.strip():
            time.sleep(1)
        for vol in volumes:
            for _ in range(30):
                if docker("volume", "rm", vol, check=False).returncode == 0 or \
                        docker("volume", "inspect", vol, check=False).returncode != 0:
                    break
                time.sleep(1)
        if created_secrets:
            docker("secret", "rm", *created_secrets, check=False)
        master.cleanup()
        consul.cleanup()
        for _ in range(30):
            if docker("network", "rm", net, check=False).returncode == 0 or \
                    docker("network", "inspect", net, check=False).returncode != 0:
                break
            time.sleep(1)
