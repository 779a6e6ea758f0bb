"""The shipped example configuration stays loadable and in step with the defaults."""
from pathlib import Path

from statesync import config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "statesync.toml"


def test_the_example_config_loads_and_matches_the_defaults():
    from_file = config.load({"node": "n1"}, env={}, config_file=str(EXAMPLE))
    defaults = config.load({"node": "n1"}, env={})
    assert from_file == defaults


def test_every_setting_of_the_schema_is_mentioned_in_the_example():
    text = EXAMPLE.read_text()
    missing = [s.name for s in config.SCHEMA if s.name.split(".")[-1] not in text]
    assert not missing, f"document these in config/statesync.toml: {missing}"
