"""The stand-in images behave as documented (tests/images/README.md), on a real engine.

The compose stacks under test run on these images instead of the public ones, so what
the project relies on in the public images is pinned down here: the icinga2 image's
/data-init copy and node setup (with its empty-CA quirk), name resolution on compose
networks, and pip in builds on the python image.
"""
from __future__ import annotations

import textwrap

import pytest

from ..engine import CONSUL, ICINGA2, PYTHON, Compose, docker, image_rm, unique_name

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
        docker("rm", "-f", name, check=False)


def test_the_project_image_builds_on_the_python_stand_in_and_runs_as_uid_5665(engine):
    image = engine.build_statesync_image()
    out = docker("run", "--rm", "--entrypoint", "id", image)
    assert out.stdout.split()[:2] == ["uid=5665(icinga)", "gid=5665(icinga)"]
    version = docker("run", "--rm", image, "--version", check=False)
    assert version.returncode == 0, version.stderr
