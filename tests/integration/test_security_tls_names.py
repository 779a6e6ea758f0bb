"""CONSUL_CAPATH and CONSUL_TLS_SERVER_NAME against the HTTPS-only, verify_incoming agent of
test_security_tls.py (its fixtures, reused: the same CA, server and client certificates)."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ..support import make_tree
from .test_security_tls import pki, run, tls_consul  # noqa: F401 (fixtures)

pytestmark = pytest.mark.consul


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one error of a failed command: the plain ``statesync: error:`` line, or the error of
    the one JSON record of that event (log.format json); no traceback, no second error."""
    errors = []
    for line in proc.stderr.strip().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            errors.append(line)
            continue
        if isinstance(record, dict) and record.get("event") == "statesync: error":
            errors.append(f"statesync: error: {record['error']}")
    assert len(errors) == 1 and errors[0].startswith("statesync: error: "), proc.stderr
    assert "\n" not in errors[0] and "Traceback" not in proc.stderr
    return errors[0]


def _backup(run, tmp_path, **env):  # noqa: F811 (the fixture's value)
    root = tmp_path / "root"
    if not root.exists():
        make_tree(root)
    return run("backup", root=root, **env)


def test_consul_capath_trusts_the_ca_certificates_of_a_directory_in_place_of_consul_cacert(
        run, pki, tmp_path):  # noqa: F811
    capath = tmp_path / "ca.d"
    capath.mkdir()
    shutil.copy(pki.ca.pem, capath / "consul-ca.pem")
    shutil.copy(pki.other_ca.pem, capath / "unrelated-ca.crt")
    proc = _backup(run, tmp_path, CONSUL_CACERT=None, CONSUL_CAPATH=str(capath))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("snapshot ")


def test_a_consul_capath_without_the_servers_ca_fails_verification_in_one_line(run, pki, tmp_path):  # noqa: F811
    capath = tmp_path / "ca.d"
    capath.mkdir()
    shutil.copy(pki.other_ca.pem, capath / "other-ca.pem")
    proc = _backup(run, tmp_path, CONSUL_CACERT=None, CONSUL_CAPATH=str(capath))
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "certificate verification" in line and "CONSUL_CAPATH" in line, line


def test_consul_tls_server_name_is_the_name_the_servers_certificate_is_verified_against(
        run, tls_consul, tmp_path):  # noqa: F811
    # Reached by IP, which the certificate also holds: only a name it holds lets the check pass.
    addr = f"https://127.0.0.1:{tls_consul.http}"
    proc = _backup(run, tmp_path, CONSUL_HTTP_ADDR=addr, CONSUL_TLS_SERVER_NAME="server.dc1.consul")
    assert proc.returncode == 0, proc.stderr


def test_a_wrong_consul_tls_server_name_fails_in_one_line_naming_the_variable(run, tls_consul, tmp_path):  # noqa: F811
    addr = f"https://127.0.0.1:{tls_consul.http}"
    proc = _backup(run, tmp_path, CONSUL_HTTP_ADDR=addr, CONSUL_TLS_SERVER_NAME="wrong.example")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "CONSUL_TLS_SERVER_NAME" in line and "not valid for the name" in line, line
