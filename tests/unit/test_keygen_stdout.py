"""`statesync keygen --out -` prints the key for a secret store that reads stdin, and writes no file."""
from __future__ import annotations

import subprocess

from statesync.snapshot.crypto import parse_key

from ..cli_runner import run_cli
from ..support import clean_env, statesync_cmd


def _keygen(cwd, *args: str) -> subprocess.CompletedProcess:
    return run_cli("keygen", *args, env=clean_env(), cwd=cwd)


def test_keygen_with_out_dash_writes_the_key_as_one_line_to_stdout_and_no_file(tmp_path):
    proc = _keygen(tmp_path, "--out", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and proc.stdout.count("\n") == 1
    parse_key(proc.stdout.strip())  # a key keygen's readers accept
    assert list(tmp_path.iterdir()) == []


def test_keygen_prints_a_new_key_each_time(tmp_path):
    assert _keygen(tmp_path, "--out", "-").stdout != _keygen(tmp_path, "--out", "-").stdout


def test_keygen_with_out_dash_and_a_group_is_a_usage_error_in_one_line(tmp_path):
    proc = _keygen(tmp_path, "--out", "-", "--group", "5665")
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "--group" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_keygen_works_while_the_configuration_names_the_key_file_it_is_about_to_create(tmp_path):
    # The first-time setup: the config already says where the key will be; keygen makes it.
    key = tmp_path / "statesync.key"
    conf = tmp_path / "statesync.toml"
    conf.write_text(f'encryption_key_file = "{key}"\n')
    env = {**clean_env(), "STATESYNC_CONFIG": str(conf)}
    proc = run_cli("keygen", "--out", str(key), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    parse_key(key.read_text().strip())


def test_keygen_to_stdout_in_a_real_process_prints_one_key_and_no_traceback_escapes_the_process(tmp_path):
    proc = subprocess.run(statesync_cmd("keygen", "--out", "-"), env=clean_env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    parse_key(proc.stdout.strip())
