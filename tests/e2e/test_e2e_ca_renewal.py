"""End to end (issue 25 item 2): a CA certificate renewed with the same key, for real, on every
Icinga 2 version of the matrix (tests/e2e/conftest.py), beside a real Consul and real sidecars.

Icinga 2 >= 2.14 (``ApiListener::RenewCA``, in 2.13.9/2.14.1 and later) renews a CA certificate it
owns when it expires within 397 days (LEAF_VALID_FOR), at the ApiListener's start and every 24 h:
the same key and subject, 15 years, written to ca/ca.crt and certs/ca.crt. No clock change is
needed (docs/ICINGA_VERSIONS.md section 5): master and satellite are given a CA certificate of the
same key and subject that expires in 300 days, then the master starts. A satellite whose CA expires
within 397 days gets the master's renewed CA over its next connection.

Icinga 2 2.13.6 (bookworm) has no RenewCA: there the test renews as an operator would, re-signing
the CA certificate with the same key (``openssl req -x509 -key ca/ca.key``) and restarting the
master; 2.13.6 does not hand the renewed CA to the satellite, which keeps the old certificate.

Either way, shown: the published CA follows the renewed certificate; <prefix>/ca-history records
the one it replaced, as a "renewal"; the satellite's guard sees "renewed-same-key", quarantines
nothing and restarts nothing; the satellite, still holding the old CA certificate, connects.

Slow (about a minute per version): the satellite's reconnect timer (10 s) runs twice.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from statesync.pki import ca_acceptance, fingerprint
from statesync.pki.fingerprint import spki_sha256

from .. import icinga
from ..icinga import MAX_WAIT, sha256_file
from ..scenarios import TimesReport
from ..support import wait_for
from .test_e2e_icinga import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.consul, pytest.mark.slow]

# Icinga's thresholds (lib/base/tlsutility.hpp): a CA valid for less than LEAF_VALID_FOR is renewed.
LEAF_VALID_FOR = timedelta(days=397)
SHORT_DAYS = 300
OPERATOR_DAYS = 15 * 365
# The line 2.14+ logs when the master's renewed CA reaches a satellite (jsonrpcconnection-pki.cpp).
CA_UPDATED = "Updating CA certificate in"
CONNECTED = "New client connection for identity 'master1'"


@pytest.fixture(scope="module")
def cluster(request, consul, tmp_path_factory, icinga_root):
    """A master and sat1, each with its sidecar, sat1 enrolled through Consul and connected."""
    icinga.require_nodes(icinga_root)
    c = Cluster(consul, tmp_path_factory.mktemp("e2e-ca-renewal"), icinga_root)
    times = tmp_path_factory.getbasetemp() / f"e2e-ca-renewal-times-{'.'.join(map(str, c.version))}.json"
    request.config.pluginmanager.register(TimesReport(c, times, "Icinga 2 end-to-end times"), f"e2e-ca-renewal-times-{c.session}")
    try:
        c.enrol_and_connect()
        yield c
    finally:
        problems = c.cleanup()
        times.write_text(json.dumps(c.times, indent=2))
        assert not problems, f"cleanup: {problems}"


def _cn(pem: bytes) -> str:
    from cryptography.x509.oid import NameOID
    [attr] = fingerprint.load_cert(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attr.value)


def _not_after(pem: bytes) -> datetime:
    return fingerprint.load_cert(pem).not_valid_after_utc


def _same_key_ca(c: Cluster, days: int, out: Path) -> bytes:
    """The master's CA certificate re-signed with its own key and subject, valid for ``days``: what an
    operator's ``openssl`` makes (docs/ICINGA_VERSIONS.md section 5)."""
    key = c.master.lib / "ca/ca.key"
    subject = "/CN=" + _cn(c.master.ca_cert().read_bytes())
    subprocess.run(["openssl", "req", "-x509", "-new", "-key", str(key), "-subj", subject, "-days", str(days),
                    "-set_serial", str(secrets.randbelow(2**63) + 1), "-sha256",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-out", str(out)],
                   check=True, capture_output=True, text=True, timeout=60)
    return out.read_bytes()


def _install(pem: bytes, *paths: Path) -> None:
    """Replace each file as Icinga does (a new file renamed over the old), nagios-owned, 0644."""
    for path in paths:
        tmp = path.with_name(path.name + ".renewal-tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o644)
        subprocess.run(["chown", "nagios:nagios", str(tmp)], check=True)
        os.replace(tmp, path)


def _published_cert(c: Cluster, pem: bytes, what: str):
    want = fingerprint.identity(pem)[1]
    return wait_for(lambda: (doc := c.published_ca()) is not None and doc.cert_sha256 == want and doc, MAX_WAIT,
                    what=f"the master's sidecar publishing {what}", details=c.details, step=0.1)


def _history(c: Cluster) -> list[dict]:
    pair = c.store().get(c.repo(c.master).layout.ca_history)
    return ca_acceptance.decode_history(pair.value if pair is not None else None)


def _log_lines(node, pattern: str) -> list[int]:
    """Indexes of the lines of ``node``'s current icinga2.log that match ``pattern``."""
    text = (node.dir("log") / "icinga2.log").read_text(errors="replace").splitlines()
    return [i for i, line in enumerate(text) if re.search(pattern, line)]


def test_a_ca_close_to_expiry_renewed_with_the_same_key_is_published_recorded_and_purges_no_satellite(cluster):
    """Icinga >= 2.14 renews the CA at the master's start; on 2.13 the test renews it as an operator.
    40-50 s per version, most of it the satellite's 10 s reconnect timer (twice on 2.14+: once to
    connect on the old certificate, once after Icinga hands it the new one)."""
    c = cluster
    with c.scenario("renewal"):
        spki = spki_sha256(c.master.ca_cert().read_bytes())
        sat_key = spki_sha256((c.sat.lib / "certs/sat1.crt").read_bytes())
        quarantine = c.sat.lib / ".statesync-quarantine"
        assert not quarantine.exists()

        # The CA, issued long ago, now expires in 300 days: master and satellite hold that certificate.
        c.master.stop()
        c.sat.stop()
        short = _same_key_ca(c, SHORT_DAYS, c.base / "short-ca.crt")
        assert spki_sha256(short) == spki and _not_after(short) - datetime.now(timezone.utc) < LEAF_VALID_FOR
        _install(short, c.master.lib / "ca/ca.crt", c.master.lib / "certs/ca.crt", c.sat.lib / "certs/ca.crt")
        _published_cert(c, short, "the 300-day CA certificate")
        assert fingerprint.issued_by((c.sat.lib / "certs/sat1.crt").read_bytes(), short)

        sat_pid = c.sat.start()
        t0 = time.monotonic()
        c.start_master()
        t_master = time.monotonic()
        if c.version >= (2, 14):
            # ApiListener::RenewCA at start: "Our CA will expire soon, but we own it. Renewing."
            wait_for(lambda: c.master.ca_cert().read_bytes() != short, MAX_WAIT,
                     what="Icinga renewing its CA certificate", details=c.details, step=0.1)
            renewed = c.master.ca_cert().read_bytes()
            # (Icinga's log file is written in blocks: the line shows a moment after the file.)
            wait_for(lambda: _log_lines(c.master, "Our CA will expire soon, but we own it. Renewing"), MAX_WAIT,
                     what="the master logging its CA renewal", details=c.master.log_tail, step=0.2)
        else:
            # 2.13.6 has no RenewCA: started with a CA 300 days from expiry, it keeps it ...
            assert c.master.ca_cert().read_bytes() == short
            assert not _log_lines(c.master, "Renewing"), c.master.log_tail()
            # ... so the operator renews it, with the same key, and restarts Icinga.
            renewed = _same_key_ca(c, OPERATOR_DAYS, c.base / "operator-ca.crt")
            _install(renewed, c.master.lib / "ca/ca.crt", c.master.lib / "certs/ca.crt")
            c.master.stop()
            c.start_master()
        assert (c.master.lib / "certs/ca.crt").read_bytes() == renewed
        assert spki_sha256(renewed) == spki and _cn(renewed) == _cn(short)
        assert _not_after(renewed) - datetime.now(timezone.utc) > timedelta(days=14 * 365)

        doc = _published_cert(c, renewed, "the renewed CA certificate")
        t_published = time.monotonic()
        assert doc.spki_sha256 == spki
        entry = _history(c)[0]
        assert entry["decision"] == "renewal", entry
        assert entry["doc"]["cert_sha256"] == fingerprint.identity(short)[1], entry
        assert entry["new_spki_sha256"] == spki and entry["doc"]["spki_sha256"] == spki

        # The satellite, on the old certificate of the same key, connects to the renewed master.
        c.wait_connected()
        t_connected = time.monotonic()
        if c.version >= (2, 14):
            # Its certificate request at connect carries the expiring CA: the master answers with its
            # renewed CA (and a fresh leaf for the same key), over the connection made on the old one.
            wait_for(lambda: (c.sat.lib / "certs/ca.crt").read_bytes() == renewed, MAX_WAIT,
                     what="the satellite receiving the renewed CA from Icinga", details=c.details, step=0.1)
            t_sat_ca = time.monotonic()
            wait_for(lambda: _log_lines(c.sat, CA_UPDATED), MAX_WAIT, what="the satellite logging the CA update",
                     details=c.sat.log_tail, step=0.2)
            # Connected first, on the old certificate: the update comes over that connection.
            assert _log_lines(c.sat, CONNECTED)[0] < _log_lines(c.sat, CA_UPDATED)[0], c.sat.log_tail(60)
            c.wait_connected()
        else:
            t_sat_ca = None
            assert not _log_lines(c.sat, CA_UPDATED), c.sat.log_tail()
        sat_cert = (c.sat.lib / "certs/sat1.crt").read_bytes()
        assert spki_sha256(sat_cert) == sat_key and fingerprint.issued_by(sat_cert, renewed)

        # No purge, no restart: the guard saw a renewal of the same CA.
        def guard_saw_renewal():
            return [e for e in c.sat_sidecar.events("CA check") if e.get("verdict") == "renewed-same-key"]
        wait_for(guard_saw_renewal, MAX_WAIT, what="the satellite's guard checking the renewed CA",
                 details=lambda: c.sat_sidecar.tail(30), step=0.2)
        verdicts = {e.get("verdict") for e in c.sat_sidecar.events("CA check")}
        assert "mismatch" not in verdicts, c.sat_sidecar.tail(40)
        assert not c.sat_sidecar.events("certificates quarantined") and not quarantine.exists()
        assert not c.sat_sidecar.events("restart triggered") and not (c.sat.root / "reenrol.log").exists()
        assert c.sat.pidfile_pid() == sat_pid and c.api.connected(c.sat.cn)
        if c.version < (2, 14):
            assert (c.sat.lib / "certs/ca.crt").read_bytes() == short  # 2.13.6 never sends it the new CA
        c.wait_snapshot(c.master, ("ca/ca.crt", "certs/ca.crt"))
        c.wait_snapshot(c.sat, ("certs/ca.crt", "certs/sat1.crt"))
        assert sha256_file(c.sat.lib / "certs/sat1.key") and not quarantine.exists()
        times = dict(master_start=t_master - t0, start_to_published=t_published - t0,
                     start_to_satellite_connected=t_connected - t0)
        if t_sat_ca is not None:
            times["start_to_satellite_has_new_ca"] = t_sat_ca - t0
        c.record(f"renewal ({'by Icinga' if c.version >= (2, 14) else 'by the operator, 2.13 has no RenewCA'})",
                 **times, total=time.monotonic() - t0)
