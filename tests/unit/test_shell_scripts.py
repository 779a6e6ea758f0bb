"""The shell scripts under `set -o pipefail` never pipe into a reader that stops early: split
from tests/integration/test_setup_script.py, which runs scripts/setup.sh itself."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_script_pipes_into_an_early_closing_reader_under_pipefail():
    # head, `grep -q` and `grep -m` stop reading early: under pipefail the writer's SIGPIPE
    # fails the pipeline, now and then. The shell scripts that set pipefail must not do it.
    scripts = [*ROOT.glob("scripts/*.sh"), ROOT / ".ci/run", *ROOT.glob("compose/*.sh"),
               *ROOT.glob("compose/swarm/*.sh")]
    offenders = []
    for path in scripts:
        text = path.read_text()
        if "pipefail" not in text:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(reader in code for reader in ("| head", "|head", "grep -q", "grep -m")) and "|" in code:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
