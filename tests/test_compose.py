"""Every compose file of compose/ is valid for docker-compose, and keeps secrets out of its environment."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

COMPOSE = Path(__file__).resolve().parent.parent / "compose"
FILES = sorted(COMPOSE.glob("*.yml"))


def test_there_are_master_ha_satellite_and_swarm_stacks():
    assert {f.name for f in FILES} >= {"master.yml", "master-ha.yml", "satellite.yml", "swarm-satellites.yml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_the_compose_file_validates_with_docker_compose(path):
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: run scripts/setup.sh"
    proc = subprocess.run([binary, "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_secret_is_an_environment_value(path):
    text = path.read_text()
    for line in text.splitlines():
        m = re.match(r"\s*(\w*(TOKEN|PASSWORD|SECRET|KEY)\w*)\s*:\s*(\S.*)$", line)
        if m and not m.group(1).endswith("_FILE"):
            pytest.fail(f"{path.name}: {m.group(1)} is set in the file; use a secret file")
