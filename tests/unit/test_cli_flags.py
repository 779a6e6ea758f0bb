"""Each command takes the flags it uses, grouped by concern, and no others."""
from __future__ import annotations

import subprocess

import pytest

from statesync.cli import parsers

from ..cli_runner import run_cli
from ..support import statesync_cmd


def _options(command: str) -> set[str]:
    parser = parsers.build_parser()
    sub = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices[command]
    return {opt for action in sub._actions for opt in action.option_strings}


def test_restore_help_shows_the_flags_restore_uses_and_not_the_sidecars():
    out = run_cli("restore", "--help").stdout
    for flag in ("--root", "--node", "--snapshot", "--consul-addr", "--dry-run", "--if-empty"):
        assert flag in out
    for flag in ("--role", "--debounce", "--keep", "--on-conflict", "--chunk-size"):
        assert flag not in out


@pytest.mark.parametrize("command, absent", [
    ("keygen", {"--consul-addr", "--root", "--node", "--keep"}),
    ("ready", {"--consul-addr", "--node", "--keep"}),
    ("snapshots", {"--root", "--keep", "--include"}),
    ("demo", {"--consul-addr", "--root", "--config"}),
    ("check-ca", {"--keep", "--include", "--role"}),
])
def test_commands_that_do_not_use_a_concern_do_not_take_its_flags(command, absent):
    assert not _options(command) & absent


def test_the_sidecar_takes_every_setting_flag():
    assert {"--root", "--node", "--prefix", "--keep", "--chunk-size", "--include", "--exclude", "--role",
            "--on-conflict", "--debounce", "--consul-addr", "--log-level"} <= _options("run")


def test_a_flag_another_command_owns_is_a_usage_error():
    proc = run_cli("snapshots", "--keep", "3")
    assert proc.returncode == 2
    assert "unrecognized arguments: --keep 3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_usage_error_ends_the_real_process_with_code_2_and_no_traceback_escapes_the_process():
    # The smoke test the in-process runner cannot be: the interpreter, its imports and its exit.
    proc = subprocess.run(statesync_cmd("snapshots", "--keep", "3"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "unrecognized arguments: --keep 3" in proc.stderr
    assert "Traceback" not in proc.stderr
