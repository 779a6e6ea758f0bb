"""Every compose file of compose/ is valid for docker-compose, keeps secrets out of its
environment, and keeps the rules that the real-engine tests (test_compose_engine.py) found."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "compose"
FILES = sorted(COMPOSE.rglob("*.yml"))
# What the stacks require from the environment of whoever runs them.
ENV = {"DOCKER_GID": "999"}


# Files that are a second -f/-c file only, each with the stack it completes.
OVERRIDES = {"swarm/consul-ca.yml": "swarm/satellites.yml"}


def _config(path: Path, env: dict | None = None) -> dict:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: run scripts/setup.sh"
    base = OVERRIDES.get(str(path.relative_to(COMPOSE)))
    files = ["-f", str(COMPOSE / base)] if base else []
    proc = subprocess.run([binary, *files, "-f", str(path), "config"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **ENV, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def test_there_are_consul_master_satellite_and_swarm_stacks():
    names = {str(f.relative_to(COMPOSE)) for f in FILES}
    assert names >= {"consul.yml", "consul-ha.yml", "master.yml", "satellite.yml", "swarm/satellites.yml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(COMPOSE)))
def test_the_compose_file_validates_with_docker_compose(path):
    _config(path)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(COMPOSE)))
def test_no_secret_is_an_environment_value(path):
    text = path.read_text()
    for line in text.splitlines():
        m = re.match(r"\s*(\w*(TOKEN|PASSWORD|SECRET|KEY)\w*)\s*:\s*(\S.*)$", line)
        if m and not m.group(1).endswith("_FILE"):
            pytest.fail(f"{path.name}: {m.group(1)} is set in the file; use a secret file")


@pytest.mark.parametrize("name", ["master.yml", "satellite.yml"])
def test_no_icinga_stack_holds_consul_so_down_v_never_deletes_the_backups(name):
    services = _config(COMPOSE / name)["services"]
    assert not [s for s, spec in services.items() if "consul" in spec.get("image", "")]


@pytest.mark.parametrize("name", ["master.yml", "satellite.yml"])
def test_icinga_starts_through_the_wrapper_that_waits_for_statesync(name):
    icinga = _config(COMPOSE / name)["services"]["icinga2"]
    assert icinga["entrypoint"] == ["/bin/sh", "/statesync/icinga-start.sh"]
    assert icinga["command"] == ["icinga2", "daemon"]


@pytest.mark.parametrize("name", ["master.yml", "satellite.yml"])
def test_the_sidecar_mirrors_both_directories_of_the_official_image_s_volume(name):
    env = _config(COMPOSE / name)["services"]["statesync"]["environment"]
    assert env["STATESYNC_ROOT"] == "/data"
    assert env["STATESYNC_ROOTS"] == "state=var/lib/icinga2,config=etc/icinga2"


def test_the_satellite_never_sets_a_ca_certificate_or_ticket_in_its_environment():
    env = _config(COMPOSE / "satellite.yml")["services"]["icinga2"]["environment"]
    assert "ICINGA_CACERT" not in env and "ICINGA_TICKET" not in env and "ICINGA_TRUSTEDCERT" not in env


def test_no_satellite_stack_hands_a_ticket_or_the_ticket_salt_to_a_satellite():
    # Issue 18: satellites enrol through Consul; a ticket (or the salt that makes them) on a
    # satellite would let it obtain a certificate for another name.
    sat = _config(COMPOSE / "satellite.yml")
    swarm = _config(COMPOSE / "swarm/satellites.yml")
    names = [s if isinstance(s, str) else s["source"] for svc in (*sat["services"].values(),
             *swarm["services"].values()) for s in svc.get("secrets", [])]
    assert not [n for n in names if "ticket" in n.lower() or "salt" in n.lower()], names
    assert not [n for n in (*sat.get("secrets", {}), *swarm.get("secrets", {})) if "ticket" in n.lower()]
    for path in (COMPOSE / "icinga-start.sh", COMPOSE / "swarm/entrypoint.sh"):
        text = path.read_text()
        assert "ICINGA_TICKET=" not in text and "icinga_ticket" not in text, path
    assert sat["services"]["statesync"]["environment"]["STATESYNC_ENROL_ENABLED"] == "1"
    assert swarm["services"]["satellite"]["environment"]["STATESYNC_ENROL_ENABLED"] == "1"


def test_the_master_sidecar_accepts_satellites_with_an_api_user_of_its_own():
    master = _config(COMPOSE / "master.yml")
    env = master["services"]["statesync"]["environment"]
    assert env["STATESYNC_ENROL_ENABLED"] == "1" and env["STATESYNC_ENROL_API_URL"].startswith("https://")
    assert env["STATESYNC_ENROL_API_PASSWORD_FILE"] == "/run/secrets/icinga_api_password"
    assert "icinga_api_password" in [s if isinstance(s, str) else s["source"]
                                     for s in master["services"]["icinga2"]["secrets"]]
    assert master["services"]["icinga2"]["environment"]["STATESYNC_API_USER"] == "statesync"


def test_the_satellite_sidecar_gets_the_docker_socket_s_group():
    sidecar = _config(COMPOSE / "satellite.yml")["services"]["statesync"]
    assert sidecar["group_add"] == ["999"]


def test_the_satellite_stack_refuses_to_start_without_the_docker_group():
    proc = subprocess.run(["docker-compose", "-f", str(COMPOSE / "satellite.yml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "DOCKER_GID"})
    assert proc.returncode != 0 and "DOCKER_GID" in proc.stderr


def test_swarm_uses_a_prebuilt_image_and_secrets_readable_by_uid_5665():
    spec = _config(COMPOSE / "swarm/satellites.yml")["services"]["satellite"]
    assert "build" not in spec
    for secret in spec["secrets"]:
        assert (secret["uid"], secret["gid"], secret["mode"]) == ("5665", "5665", 0o400)
    assert spec["healthcheck"]["test"] == ["CMD", "statesync", "health"]
    assert "TICKET_SALT_FILE" not in spec["environment"]
    assert not [s for s in spec["secrets"] if "salt" in s["source"]]


@pytest.mark.parametrize("name", ["master.yml", "satellite.yml"])
def test_the_sidecar_gets_no_consul_ca_unless_consul_cacert_names_one(name):
    off = _config(COMPOSE / name, {"CONSUL_CACERT": ""})["services"]["statesync"]
    assert off["environment"]["CONSUL_CACERT"] == ""
    assert "/dev/null:/run/statesync-no-consul-ca:ro" in off["volumes"]
    on = _config(COMPOSE / name, {"CONSUL_CACERT": "/etc/pki/consul-ca.pem"})["services"]["statesync"]
    assert on["environment"]["CONSUL_CACERT"] == "/etc/pki/consul-ca.pem"
    assert "/etc/pki/consul-ca.pem:/etc/pki/consul-ca.pem:ro" in on["volumes"]


def test_the_swarm_consul_ca_file_adds_the_ca_secret_and_keeps_the_stack_s_own():
    spec = _config(COMPOSE / "swarm/consul-ca.yml", {"CONSUL_CA_SECRET": "consul_ca_2027"})
    sat = spec["services"]["satellite"]
    assert sat["environment"]["CONSUL_CACERT"] == "/run/secrets/consul_ca"
    assert {s["source"]: (s["target"], s["uid"], s["mode"]) for s in sat["secrets"]} == {
        "consul_token": ("consul_token", "5665", 0o400), "statesync_key": ("statesync_key", "5665", 0o400),
        "consul_ca": ("consul_ca", "5665", 0o444)}
    assert spec["secrets"]["consul_ca"] == {"external": True, "name": "consul_ca_2027"}
    alone = _config(COMPOSE / "swarm/satellites.yml")["services"]["satellite"]
    assert "CONSUL_CACERT" not in alone["environment"]


def test_the_image_health_check_reads_the_port_from_the_configuration():
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    assert 'CMD ["statesync", "health"]' in dockerfile and "9465/healthz" not in dockerfile


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(COMPOSE)))
def test_every_file_a_stack_points_to_exists(path):
    # master.yml once pointed readers to a compose/README.md that did not exist.
    text = re.sub(r"(?<![\w.])/[\w./-]+", " ", path.read_text())  # absolute paths live in the containers
    named = set(re.findall(r"\b((?:[\w.-]+/)*[\w.-]+\.(?:md|yml|sh))\b", text))
    # "compose/x" and "docs/x" are named from the repository's root, anything else from the stack's directory
    missing = [n for n in named if not (COMPOSE.parent / n if n.startswith(("compose/", "docs/"))
                                        else path.parent / n).exists()]
    assert missing == []


@pytest.mark.parametrize("name", ["master.yml", "satellite.yml"])
def test_the_image_fills_the_volume_before_the_sidecar_and_one_variable_picks_it(name):
    # From 2.16 the engine copies the image's /data into the volume only while it is empty, at
    # the creation of a container that mounts it: a container of the Icinga image must be
    # created before the sidecar writes there (test_compose_engine.py tests the order live).
    services = _config(COMPOSE / name, {"ICINGA_IMAGE": "example/icinga2:9.9"})["services"]
    first = services["icinga2-volume"]
    assert first["image"] == services["icinga2"]["image"] == "example/icinga2:9.9"
    assert first["entrypoint"] == ["true"] and first.get("restart") in (None, "no")
    volume = [v for v in services["icinga2"]["volumes"] if ":/data:" in v]
    assert len(volume) == 1 and [v for v in first["volumes"] if ":/data:" in v] == volume
    assert "icinga2-volume" in services["statesync"]["depends_on"]
    assert "statesync" in services["icinga2"]["depends_on"]
    assert "icinga/icinga2:2.16" in (COMPOSE / name).read_text()


def test_master_yml_is_a_ca_master_unless_icinga_master_is_set_even_to_nothing():
    # compose/README.md's HA zone: the second master is master.yml again with ICINGA_MASTER set
    # to nothing and the node setup variables; a PEM keeps its lines (in YAML double quotes, an
    # override file's usual way, they would fold into spaces and node setup would refuse it).
    first = _config(COMPOSE / "master.yml")["services"]["icinga2"]["environment"]
    assert first["ICINGA_MASTER"] == "1"
    assert not [k for k, v in first.items() if k.startswith("ICINGA_") and k not in ("ICINGA_MASTER", "ICINGA_CN") and v]
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    second = _config(COMPOSE / "master.yml", {
        "ICINGA_MASTER": "", "MASTER_NAME": "icinga-master2", "ICINGA_ZONE": "master",
        "ICINGA_ENDPOINT": "icinga-master,icinga-master,5665", "ICINGA_PARENT_HOST": "icinga-master,5665",
        "ICINGA_PARENT_ZONE": "master", "ICINGA_ACCEPT_CONFIG": "1", "ICINGA_ACCEPT_COMMANDS": "1",
        "ICINGA_TICKET": "0123abcd", "ICINGA_TRUSTEDCERT": pem})["services"]
    env = second["icinga2"]["environment"]
    assert env["ICINGA_MASTER"] == "" and env["ICINGA_CN"] == "icinga-master2"
    assert env["ICINGA_TRUSTEDCERT"] == pem and env["ICINGA_TICKET"] == "0123abcd"
    assert env["ICINGA_PARENT_HOST"] == "icinga-master,5665" and env["ICINGA_ZONE"] == "master"
    assert second["statesync"]["environment"]["STATESYNC_NODE"] == "icinga-master2"


def _seconds(duration: str) -> float:
    """A compose duration ("2m", "90s", "1m30s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("name", ["master.yml", "satellite.yml"])
def test_icinga_has_time_to_write_its_program_state_as_it_stops(name):
    # Icinga 2 dumps its program state as it stops: a master at L (10,000 hosts x 20 services,
    # 362 MB) took 13 s to dump and 15 s to stop (docs/BENCH.md, "A rebuilt master at L"). With
    # compose's default of 10 s the engine kills it mid-dump, and that state is lost, locally
    # and in Consul. The sidecar is stopped after Icinga 2 and commits the dump (its own 30 s).
    services = _config(COMPOSE / name)["services"]
    assert _seconds(services["icinga2"].get("stop_grace_period", "10s")) >= 60
    assert _seconds(services["statesync"]["stop_grace_period"]) >= 30
