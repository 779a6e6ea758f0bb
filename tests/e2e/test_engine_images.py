"""The stand-in images behave as documented (tests/images/README.md), on a real engine.

The compose stacks under test run on these images instead of the public ones, so what
the project relies on in the public images is pinned down here: the 2.14 icinga2 image's
/data-init copy and node setup (with its empty-CA quirk), the 2.16 one's layout, VOLUME and
entrypoint, the engine's copy of an image's /data into an empty volume, name resolution on
compose networks, and pip in builds on the python image. Slow: each test starts containers,
some of them real Icinga 2 (node setup takes seconds).
"""
from __future__ import annotations

import textwrap

import pytest

from ..engine import (
    CONSUL,
    DEBIAN,
    ICINGA2,
    ICINGA2_16,
    PYTHON,
    Compose,
    docker,
    image_rm,
    inspect,
    unique_name,
    volume_rm,
)

pytestmark = [pytest.mark.engine, pytest.mark.slow]

# Polls from inside the probe container: one exec, bounded, instead of one per attempt.
HTTP_STATUS_LOOP = """
for i in $(seq 1 {tries}); do
  code=$(curl -sk -o /dev/null -m 2 -w '%{{http_code}}' {url})
  [ "$code" = {want} ] && exit 0
  sleep 1
done
echo "last status $code" >&2; exit 1
"""


def compose_file(tmp_path, text: str):
    path = tmp_path / "docker-compose.yml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def icinga_stack(engine, tmp_path):
    """icinga2 as master and plain (no ICINGA_* at all) on one named volume, and a probe
    container on the same network. ICINGA_* set but empty would still run node setup."""
    path = compose_file(tmp_path, f"""\
        version: "2.4"
        services:
          icinga2:
            image: {ICINGA2}
            environment:
              ICINGA_MASTER: "1"
              ICINGA_CN: icinga2
            volumes: ["data:/data"]
          plain:
            image: {ICINGA2}
            volumes: ["data:/data"]
          probe:
            image: {ICINGA2}
            entrypoint: ["sleep", "infinity"]
        volumes:
          data:
        """)
    with Compose(path) as stack:
        yield stack


def test_the_icinga2_stand_in_fills_an_empty_volume_from_data_init_and_runs_as_uid_5665(icinga_stack):
    out = icinga_stack.run(
        "plain", "sh", "-c",
        "id -u; id -g; stat -c '%U %a' /data/var/lib/icinga2; readlink -f /run/icinga2;"
        " ls /data/etc/icinga2/features-enabled; ls -d /data/var/*/icinga2")
    lines = out.stdout.splitlines()
    assert lines[:4] == ["5665", "5665", "icinga 750", "/data/var/run/icinga2"]
    assert "mainlog.conf" not in lines and "checker.conf" in lines
    for d in ("cache", "lib", "log", "run", "spool"):
        assert f"/data/var/{d}/icinga2" in lines
    assert 'Copying "/data-init/var/lib/icinga2" to "/data/var/lib/icinga2"' in out.stderr


def test_the_icinga2_stand_in_copies_only_what_the_volume_lacks(icinga_stack):
    icinga_stack.run("plain", "sh", "-c",
                     "touch /data/var/lib/icinga2/kept && rm -r /data/var/lib/icinga2/api"
                     " /data/etc/icinga2")
    out = icinga_stack.run(
        "plain", "sh", "-c",
        "ls /data/var/lib/icinga2; test -f /data/etc/icinga2/icinga2.conf && echo etc-back")
    assert "kept" in out.stdout.split() and "api" not in out.stdout.split()
    assert "etc-back" in out.stdout
    assert 'Copying "/data-init/etc/icinga2"' in out.stderr
    assert 'Copying "/data-init/var/lib/icinga2"' not in out.stderr


def test_the_icinga2_stand_in_as_master_runs_node_setup_and_serves_the_api_to_another_container(icinga_stack):
    icinga_stack.up("icinga2", "probe", wait=60)
    probe = icinga_stack.exec("probe", "bash", "-c", HTTP_STATUS_LOOP.format(
        tries=60, url="https://icinga2:5665/v1", want=401), check=False, timeout=90)
    logs = icinga_stack.logs("icinga2")
    assert probe.returncode == 0, probe.stderr + logs[-3000:]
    assert "Running 'node setup'" in logs
    owners = icinga_stack.exec("icinga2", "sh", "-c",
                               "ps -o user= -C icinga2 | sort -u;"
                               " stat -c %U /var/lib/icinga2/certs/icinga2.crt /var/lib/icinga2/ca/ca.crt")
    assert set(owners.stdout.split()) == {"icinga"}


def test_an_empty_icinga_cacert_leaves_a_zero_byte_ca_crt_that_stops_node_setup_forever(icinga_stack):
    first = icinga_stack.run("plain", env={"ICINGA_CACERT": ""}, check=False)
    assert first.returncode == 1
    assert "critical/DockerEntrypoint: exit status 1" in first.stderr
    ca = icinga_stack.run("plain", "stat", "-c", "%s %a %U", "/var/lib/icinga2/certs/ca.crt")
    assert ca.stdout.split() == ["0", "640", "icinga"]
    again = icinga_stack.run("plain", "true", env={"ICINGA_MASTER": "1", "ICINGA_CN": "x"})
    assert "Running 'node setup'" not in again.stderr


def test_the_consul_stand_in_answers_the_leader_endpoint_by_service_name_on_a_bridge_network(engine, tmp_path):
    path = compose_file(tmp_path, f"""\
        version: "2.4"
        services:
          consul:
            image: {CONSUL}
            healthcheck:
              test: ["CMD", "consul", "members"]
              interval: 1s
              timeout: 3s
              retries: 30
          client:
            image: {PYTHON}
            command: ["sleep", "infinity"]
            depends_on:
              consul: {{condition: service_healthy}}
        """)
    with Compose(path) as stack:
        stack.up(wait=60)
        leader = stack.exec("client", "python", "-c", textwrap.dedent("""\
            import json, time, urllib.request
            for _ in range(30):
                addr = json.load(urllib.request.urlopen("http://consul:8500/v1/status/leader", timeout=2))
                if addr:
                    print(addr)
                    break
                time.sleep(1)
            """))
        assert leader.stdout.strip().endswith(":8300")
        # The agent drops root as the real image's entrypoint does.
        user = stack.exec("consul", "stat", "-c", "%U", "/proc/1")
        assert user.stdout.split() == ["consul"]


def test_the_python_stand_in_pip_installs_from_the_index_in_a_host_network_build(engine, tmp_path):
    (tmp_path / "Dockerfile").write_text(textwrap.dedent(f"""\
        FROM {PYTHON}
        RUN pip install --no-cache-dir six==1.16.0 && python -c "import six"
        RUN groupadd --gid 5665 icinga && useradd --uid 5665 --gid icinga --no-create-home icinga
        RUN python -m venv /tmp/venv && /tmp/venv/bin/pip --version
        """))
    tag = f"statesync-test/{unique_name()}:pip"
    try:
        built = docker("build", "--no-cache", "--force-rm", "--network", "host", "-t", tag, str(tmp_path),
                       check=False, timeout=300)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    finally:
        image_rm(tag)


def test_the_icinga2_stand_in_entrypoint_touches_nothing_when_it_is_not_pid_1(engine):
    name = unique_name("ssinit")
    try:
        # --init puts docker-init at PID 1, as a wrapper such as tini would.
        out = docker("run", "--name", name, "--init", ICINGA2, "sh", "-c", "ls -A /data",
                     check=False, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "" and "DockerEntrypoint" not in out.stderr
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_the_project_image_builds_on_the_python_stand_in_and_runs_as_uid_5665(engine):
    image = engine.build_statesync_image()
    out = docker("run", "--rm", "--entrypoint", "id", image)
    assert out.stdout.split()[:2] == ["uid=5665(icinga)", "gid=5665(icinga)"]
    version = docker("run", "--rm", image, "--version", check=False)
    assert version.returncode == 0, version.stderr


# --------------------------------------------------------------------------- the image from 2.16 on

def test_the_2_16_stand_in_has_the_official_layout_user_volume_and_entrypoint(engine):
    config = inspect(ICINGA2_16, "image")["Config"]
    assert config["Entrypoint"] == ["/usr/bin/dumb-init", "-c", "--", "/usr/local/bin/entrypoint.sh"]
    assert config["Cmd"] == ["icinga2", "daemon"] and config["User"] == "icinga"
    assert list(config["Volumes"]) == ["/data"]
    out = docker("run", "--rm", "--entrypoint", "sh", ICINGA2_16, "-c",
                 "id -u; id -g; for d in /etc/icinga2 /var/cache/icinga2 /var/lib/icinga2 /var/log/icinga2"
                 " /var/spool/icinga2; do readlink $d; done; ls -A /data/var/lib/icinga2 | tr '\\n' ' '; echo;"
                 " ls -A /data/var/lib/icinga2/certs | wc -l; stat -c %U /data/etc/icinga2/icinga2.conf;"
                 " ls /data/etc/icinga2/features-enabled | tr '\\n' ' '; echo; test ! -e /data-init && echo no-data-init")
    lines = out.stdout.splitlines()
    assert lines[:2] == ["5665", "5665"]
    assert lines[2:7] == ["/data/etc/icinga2", "/data/var/cache/icinga2", "/data/var/lib/icinga2",
                          "/data/var/log/icinga2", "/data/var/spool/icinga2"]
    assert lines[7].split() == ["api", "certificate-requests", "certs"]
    assert lines[8:10] == ["0", "icinga"]  # an empty certs/: no Icinga 2 state yet
    assert "mainlog.conf" not in lines[10].split() and "checker.conf" in lines[10].split()
    assert lines[11] == "no-data-init"


def test_the_engine_copies_an_images_data_into_an_empty_volume_when_the_container_is_created(engine):
    # What the compose stacks' order rests on (compose/master.yml, icinga2-volume): the copy
    # happens at creation, not at start, and only into an empty volume; a container of an
    # image with an empty /data (the sidecar's) copies nothing and leaves the volume empty.
    names = [unique_name("sscopy") for _ in range(3)]
    created = []
    try:
        def listing(volume: str) -> list[str]:
            return docker("run", "--rm", "-v", f"{volume}:/data", DEBIAN, "ls", "-A", "/data").stdout.split()

        created.append(docker("create", "-v", f"{names[0]}:/data", ICINGA2_16, "true").stdout.strip())
        assert listing(names[0]) == ["etc", "var"]
        docker("run", "--rm", "-v", f"{names[1]}:/data", DEBIAN, "touch", "/data/.statesync-ready")
        created.append(docker("create", "-v", f"{names[1]}:/data", ICINGA2_16, "true").stdout.strip())
        assert listing(names[1]) == [".statesync-ready"]
        created.append(docker("create", "-v", f"{names[2]}:/data", ICINGA2, "true").stdout.strip())
        assert listing(names[2]) == []
    finally:
        if created:
            docker("rm", "-f", "-v", *created, check=False)
        for name in names:
            volume_rm(name)


def test_the_2_16_entrypoint_runs_node_setup_from_icinga_variables_only_without_a_ca(engine):
    volume = unique_name("ss216")
    try:
        def run(*env: str, cmd: tuple[str, ...] = ("true",)):
            args = [a for e in env for a in ("-e", e)]
            return docker("run", "--rm", "-v", f"{volume}:/data", *args, ICINGA2_16, *cmd, check=False, timeout=120)

        # Not global-templates or director-global: a master's node setup declares both itself, and
        # naming one again fails it ("critical/cli: The global zone ... is already specified").
        first = run("ICINGA_MASTER=1", "ICINGA_CN=m216", "ICINGA_GLOBAL_ZONES=linux-templates,windows-templates",
                    "ICINGA_SOMETHING=x", "MSMTPRC=account default",
                    cmd=("sh", "-c", "cat /etc/icinga2/zones.conf; cat /var/lib/icinga2/.msmtprc"))
        assert first.returncode == 0, first.stderr[-3000:]
        assert "Running Icinga 2 node setup command..." in first.stderr
        assert "warning/DockerEntrypoint: Ignoring unknown environment variable ICINGA_SOMETHING" in first.stderr
        assert 'object Zone "linux-templates"' in first.stdout and 'object Zone "windows-templates"' in first.stdout
        assert first.stdout.endswith("account default")
        # certs/ca.crt exists now: no node setup, whatever the variables say.
        again = run("ICINGA_MASTER=1", "ICINGA_CN=other")
        assert again.returncode == 0 and "node setup" not in again.stderr.replace("No node setup", "")
        # ICINGA_LOG_LEVEL is appended to an icinga2 command, and to no other.
        level = run("ICINGA_LOG_LEVEL=warning", cmd=("icinga2", "daemon", "-C"))
        assert level.returncode == 0, level.stderr[-3000:]
        assert 'Launching Icinga 2 in "warning" log level.' in level.stderr
        assert "information/ConfigItem" not in level.stdout + level.stderr
        none = run("ICINGA_LOG_LEVEL=warning", cmd=("true",))
        assert none.returncode == 0 and "log level" not in none.stderr
        # No command: one critical line, exit 1.
        empty = docker("run", "--rm", "--entrypoint", "/usr/local/bin/entrypoint.sh", ICINGA2_16, check=False)
        assert empty.returncode == 1 and "critical/DockerEntrypoint" in empty.stderr
    finally:
        volume_rm(volume)
