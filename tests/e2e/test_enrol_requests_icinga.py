"""Icinga 2 takes our signature of a satellite's pending request: split from
tests/unit/test_enrol_requests.py, whose other tests need nothing but Python."""
from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path

import pytest

from statesync.enrol.requests import scan, write_response
from statesync.errors import CorruptData
from statesync.pki import fingerprint
from statesync.pki.signing import sign

from .. import icinga
from ..support import free_ports, wait_for


def _signed_column(listing: str) -> dict[str, bool]:
    """``icinga2 ca list --all``: a header, a rule, then ``fingerprint | timestamp | * or blank | subject``."""
    out = {}
    for line in listing.splitlines()[2:]:
        cols = [c.strip() for c in line.split("|")]
        if len(cols) == 4:
            out[cols[0]] = cols[2] == "*"
    return out


def _issued(cert: Path, ca: Path) -> bool:
    """Whether ``cert`` is signed by ``ca`` yet; a file Icinga is writing just now is not."""
    try:
        return fingerprint.issued_by(cert.read_bytes(), ca.read_bytes())
    except (OSError, CorruptData):
        return False


@pytest.mark.e2e
def test_icinga_takes_our_signature_of_a_satellites_pending_request(tmp_path, icinga_root):
    """On every Icinga 2 version of the matrix (tests/e2e/conftest.py)."""
    icinga.require_nodes(icinga_root)
    session = "t-" + secrets.token_hex(3)
    mp, sp = free_ports(2)
    master = icinga.Node("master1", "master", str(tmp_path / "master1"), mp, session, icinga_root=icinga_root)
    sat = icinga.Node("sat1", "sat", str(tmp_path / "sat1"), sp, session, icinga_root=icinga_root)
    try:
        icinga.provision_master(master, [], "root", "pw")
        master.start()
        icinga.pending_satellite(sat, master)  # node setup without a ticket: the request is pending
        certs = sat.lib / "certs"
        sat_pem = (certs / "sat1.crt").read_bytes()
        [found] = scan(master.lib / "certificate-requests")
        assert found.error == "" and found.request.cn == "sat1"
        assert found.fingerprint == fingerprint.cert_sha256(sat_pem)
        assert found.request.spki_sha256 == fingerprint.spki_sha256(sat_pem)
        assert _signed_column(master.icinga2("ca", "list", "--all").stdout) == {found.fingerprint: False}

        response = sign(found.request, master.ca_cert().read_bytes(), (master.lib / "ca/ca.key").read_bytes())
        before = found.path.stat()
        assert write_response(found.path, found.fingerprint, response)
        after = found.path.stat()
        assert (after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode)
        assert _signed_column(master.icinga2("ca", "list", "--all").stdout) == {found.fingerprint: True}
        listed = json.loads(master.icinga2("ca", "list", "--all", "--json").stdout)
        assert listed[found.fingerprint]["cert_response"] == response.decode()

        (tmp_path / "response.crt").write_bytes(response)
        proc = subprocess.run(["openssl", "verify", "-CAfile", str(master.ca_cert()), str(tmp_path / "response.crt")],
                              check=False, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr

        sat.patch_api_listener()
        sat.start()
        wait_for(lambda: _issued(certs / "sat1.crt", master.ca_cert()), 60, what="sat1 installs the certificate we signed", details=sat.log_tail, step=0.2)
        assert (certs / "sat1.crt").read_bytes() == response
    finally:
        master.stop()
        sat.stop()
