"""Unit tests for the guard's pure decisions (statesync.guard_logic)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from statesync.disk import node_cert_name
from statesync.guard.logic import (
    Decision,
    Verdict,
    cannot_tell,
    decide,
    future_purges,
    last_purge_time,
    purge_allowed,
    quarantine_files,
    quarantine_stamp,
    same_mismatch,
)
from statesync.pki import cadoc, fingerprint

from ..certs import make_ca, pending_request, renew, sign


@pytest.fixture(scope="module")
def cas():
    old = make_ca()
    return {"old": old, "renewed": renew(old), "new": make_ca(), "node": sign(old, "sat1")[1]}


def published(ca) -> bytes:
    return cadoc.encode(cadoc.from_pem(ca.pem, "2026-01-01T00:00:00Z", "master1", "snap"))


def test_the_same_ca_on_both_sides_is_a_match(cas):
    d = decide(cas["old"].pem, published(cas["old"]), cas["node"])
    assert d.verdict is Verdict.MATCH and d.exit_code == 0
    assert d.local_spki == d.published_spki == fingerprint.spki_sha256(cas["old"].pem)


def test_a_published_renewal_with_the_same_key_is_not_a_mismatch(cas):
    d = decide(cas["old"].pem, published(cas["renewed"]), cas["node"])
    assert d.verdict is Verdict.RENEWED and d.exit_code == 0
    assert d.local_spki == d.published_spki
    assert d.local_cert != d.published_cert


def test_a_local_renewal_against_the_old_published_certificate_is_not_a_mismatch_either(cas):
    assert decide(cas["renewed"].pem, published(cas["old"]), cas["node"]).verdict is Verdict.RENEWED


def test_a_published_ca_with_another_key_is_a_mismatch_with_both_fingerprints(cas):
    d = decide(cas["old"].pem, published(cas["new"]), cas["node"])
    assert d.verdict is Verdict.MISMATCH and d.exit_code == 1
    assert d.local_spki == fingerprint.spki_sha256(cas["old"].pem)
    assert d.published_spki == fingerprint.spki_sha256(cas["new"].pem)
    assert "another public key" in d.reason


def test_a_node_certificate_that_does_not_verify_against_the_published_ca_is_a_mismatch(cas):
    foreign = sign(cas["new"], "sat1")[1]
    d = decide(cas["old"].pem, published(cas["old"]), foreign, "certs/sat1.crt")
    assert d.verdict is Verdict.MISMATCH
    assert "certs/sat1.crt does not verify" in d.reason


def test_a_self_signed_node_certificate_is_a_pending_enrolment_never_a_mismatch(cas):
    # What node setup without a ticket leaves behind, under the published CA or a stale one:
    # quarantining it would throw away the request the master is about to sign.
    _, pending = pending_request("sat1")
    for local in (cas["old"].pem, cas["new"].pem):
        d = decide(local, published(cas["old"]), pending, "certs/sat1.crt")
        assert d.verdict is Verdict.UNKNOWN, d
        assert "self-signed" in d.reason and "pending" in d.reason


def test_a_missing_node_certificate_is_judged_by_the_ca_alone(cas):
    assert decide(cas["old"].pem, published(cas["old"]), None).verdict is Verdict.MATCH


@pytest.mark.parametrize("case, reason", [
    ("nothing published", "no CA is published"),
    ("published garbage", "invalid"),
    ("published tampered", "invalid"),
    ("local missing", "not enrolled"),
    ("local garbage", "unreadable"),
    ("node garbage", "unreadable"),
])
def test_whatever_cannot_be_read_or_verified_is_cannot_tell_never_a_mismatch(cas, case, reason):
    local, pub, node = cas["old"].pem, published(cas["new"]), cas["node"]
    if case == "nothing published":
        pub = None
    elif case == "published garbage":
        pub = b"\x00not json"
    elif case == "published tampered":
        doc = json.loads(pub)
        doc["spki_sha256"] = fingerprint.spki_sha256(cas["old"].pem)  # claims to be the local CA
        pub = json.dumps(doc).encode()
    elif case == "local missing":
        local = None
    elif case == "local garbage":
        local = b"garbage"
    elif case == "node garbage":
        pub = published(cas["old"])
        node = b"garbage"
    d = decide(local, pub, node)
    assert d.verdict is Verdict.UNKNOWN and d.exit_code == 2
    assert reason in d.reason


def test_a_failure_outside_the_comparison_still_carries_the_local_fingerprint(cas):
    d = cannot_tell("Consul unreachable", cas["old"].pem)
    assert d.verdict is Verdict.UNKNOWN
    assert d.local_spki == fingerprint.spki_sha256(cas["old"].pem) and d.published_spki is None
    fields = d.log_fields()
    assert {"local_ca_spki_sha256", "published_ca_spki_sha256", "verdict", "reason"} <= fields.keys()


def test_a_mismatch_is_confirmed_only_by_a_mismatch_between_the_same_keys(cas):
    first = decide(cas["old"].pem, published(cas["new"]), cas["node"])
    assert same_mismatch(first, decide(cas["old"].pem, published(cas["new"]), cas["node"]))
    other = make_ca()
    assert not same_mismatch(first, decide(cas["old"].pem, published(other), cas["node"]))
    assert not same_mismatch(first, decide(cas["old"].pem, published(cas["old"]), cas["node"]))
    assert not same_mismatch(first, cannot_tell("Consul unreachable", cas["old"].pem))
    assert not same_mismatch(Decision(Verdict.UNKNOWN, "x"), Decision(Verdict.UNKNOWN, "x"))


def test_one_purge_per_window_and_a_purge_dated_in_the_future_counts_as_recent():
    assert purge_allowed(None, 1000.0, 600)
    assert not purge_allowed(900.0, 1000.0, 600)
    assert purge_allowed(400.0, 1000.0, 600)
    assert not purge_allowed(2000.0, 1000.0, 600)
    assert purge_allowed(999.9, 1000.0, 0)


def test_quarantine_directory_names_sort_by_time_and_give_back_the_last_purge():
    t1 = datetime(2026, 11, 23, 23, 44, 7, 123456, tzinfo=timezone.utc)
    t2 = datetime(2026, 11, 24, 1, 0, 0, tzinfo=timezone.utc)
    names = [quarantine_stamp(t1), quarantine_stamp(t2) + "-1", "README", "2026-bad"]
    assert names[0] == "20261123T234407.123456Z"
    assert last_purge_time(names) == t2.timestamp()
    assert last_purge_time(["junk"]) is None


def test_the_node_certificate_name_is_configured_or_found_from_the_one_key_file():
    assert node_cert_name(["ca.crt", "sat1.example.com.key", "sat1.example.com.crt"], "", "sat1") == "sat1.example.com"
    assert node_cert_name(["ca.crt", "a.key", "b.key"], "", "sat1") == "sat1"
    assert node_cert_name([], "", "sat1") == "sat1"
    assert node_cert_name(["x.key"], "configured", "sat1") == "configured"


def test_a_purge_moves_the_node_files_ticket_and_parent_and_the_ca_last():
    files = quarantine_files("sat1")
    assert files == ["certs/sat1.crt", "certs/sat1.key", "certs/sat1.csr", "certs/ticket",
                     "certs/trusted-parent.crt", "certs/ca.crt"]


# -- a published CA worth acting on ---------------------------------------------------

def _forged_ca(cn: str = "Icinga CA"):
    """A certificate claiming to be a self-signed CA but signed by another key than its own."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    own, signer = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(own.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))
    return type("Forged", (), {"pem": cert.public_bytes(serialization.Encoding.PEM)})()


def _leaf(ca):
    return type("Leaf", (), {"pem": sign(ca, "not-a-ca.example")[1]})()


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


@pytest.mark.parametrize("make, reason", [
    (lambda: _leaf(make_ca()), "not a CA certificate"),
    (_forged_ca, "self-signature does not verify"),
    (lambda: make_ca(start=datetime.now(timezone.utc).replace(year=2020), days=30), "expired at"),
    (lambda: make_ca(start=datetime.fromtimestamp(_now() + 3600, timezone.utc)), "not valid before"),
])
def test_a_published_certificate_that_is_no_ca_worth_acting_on_is_cannot_tell_not_a_mismatch(cas, make, reason):
    d = decide(cas["old"].pem, published(make()), cas["node"], now=_now(), clock_skew=300)
    assert d.verdict is Verdict.UNKNOWN and d.exit_code == 2 and d.untrusted
    assert reason in d.reason and d.reason.startswith("the published CA is not trusted")
    assert d.published_spki is not None and d.local_spki == fingerprint.spki_sha256(cas["old"].pem)


def test_a_ca_valid_from_within_the_clock_skew_or_expired_within_it_is_still_acted_on(cas):
    soon = make_ca(start=datetime.fromtimestamp(_now() + 60, timezone.utc))
    assert decide(cas["old"].pem, published(soon), cas["node"], now=_now(), clock_skew=300).verdict is Verdict.MISMATCH
    assert decide(cas["old"].pem, published(soon), cas["node"], now=_now(), clock_skew=0).untrusted
    just_expired = make_ca(start=datetime.fromtimestamp(_now() - 86400 - 60, timezone.utc), days=1)
    d = decide(cas["old"].pem, published(just_expired), cas["node"], now=_now(), clock_skew=300)
    assert d.verdict is Verdict.MISMATCH and not d.untrusted


def test_a_good_new_ca_is_still_a_mismatch_and_a_renewal_valid_from_next_month_still_a_renewal(cas):
    assert decide(cas["old"].pem, published(cas["new"]), cas["node"], now=_now()).verdict is Verdict.MISMATCH
    assert decide(cas["old"].pem, published(cas["renewed"]), cas["node"], now=_now()).verdict is Verdict.RENEWED


def test_quarantine_directories_dated_beyond_the_clock_skew_neither_block_a_purge_nor_go_unnoticed():
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
    past = quarantine_stamp(datetime(2026, 12, 1, 11, 55, 0, tzinfo=timezone.utc))
    near = quarantine_stamp(datetime(2026, 12, 1, 12, 4, 0, tzinfo=timezone.utc))
    far = quarantine_stamp(datetime(2099, 1, 1, tzinfo=timezone.utc))
    t = now.timestamp()
    assert last_purge_time([far], t, 300) is None
    assert last_purge_time([past, far], t, 300) == datetime(2026, 12, 1, 11, 55, tzinfo=timezone.utc).timestamp()
    assert last_purge_time([near, far], t, 300) == datetime(2026, 12, 1, 12, 4, tzinfo=timezone.utc).timestamp()
    assert future_purges([past, near, far, "junk"], t, 300) == [far]
