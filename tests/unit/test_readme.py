"""README.md tells the truth: its test command is the one CI runs, its config table is current."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_exactly_the_test_command_the_readme_gives():
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^(\./scripts/test\.sh)\s+#", readme, re.M)
    assert m, "README's quick start must give the test command"
    ci = (ROOT / ".ci/run").read_text()
    assert re.search(rf"^{re.escape(m.group(1))}$", ci, re.M)


def test_the_configuration_table_matches_the_schema():
    out = subprocess.run([sys.executable, str(ROOT / "scripts/config_reference.py")], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out in (ROOT / "README.md").read_text(), "run scripts/config_reference.py --write"
