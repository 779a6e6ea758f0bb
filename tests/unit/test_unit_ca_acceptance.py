"""The operator's CA acceptance record and the history of published CAs (statesync.pki.ca_acceptance), pure."""
from __future__ import annotations

import json

import pytest

from statesync.errors import CorruptData
from statesync.pki import ca_acceptance, cadoc
from statesync.snapshot.layout import Layout

from ..certs import make_ca

OLD, NEW = "a" * 64, "b" * 64


def _record(**changes) -> ca_acceptance.Acceptance:
    fields = dict(old_spki_sha256=OLD, new_spki_sha256=NEW, new_cert_sha256="c" * 64, new_subject="CN=x",
                  node="master1", operator="ops@host", time="2026-12-01T00:00:00+00:00", reason="rotation")
    fields.update(changes)
    return ca_acceptance.Acceptance(**fields)


def test_a_record_round_trips_through_encode_and_decode():
    a = _record()
    assert ca_acceptance.decode_acceptance(ca_acceptance.encode_acceptance(a)) == a


def test_a_record_allows_exactly_the_change_it_names():
    a = _record()
    assert a.allows(OLD, NEW)
    assert not a.allows(NEW, OLD)  # the other way round is another decision
    assert not a.allows("d" * 64, NEW)  # the published CA changed since the operator looked
    assert not a.allows(OLD, "d" * 64)


def test_a_record_made_when_nothing_was_published_allows_a_first_publication_only():
    a = _record(old_spki_sha256="")
    assert a.allows("", NEW) and a.allows(None, NEW)
    assert not a.allows(OLD, NEW)


@pytest.mark.parametrize("blob", [b"", b"not json", b"[]", b'{"v": 2}', json.dumps({"v": 1}).encode(),
                                  b"x" * (ca_acceptance.MAX_RECORD_BYTES + 1)])
def test_decode_rejects_what_is_not_a_complete_record(blob):
    with pytest.raises(CorruptData):
        ca_acceptance.decode_acceptance(blob)


@pytest.mark.parametrize("field,value", [("new_spki_sha256", "nothex"), ("old_spki_sha256", "A" * 64),
                                         ("reason", 3)])
def test_decode_rejects_a_record_with_a_bad_field(field, value):
    d = json.loads(ca_acceptance.encode_acceptance(_record()))
    d[field] = value
    with pytest.raises(CorruptData):
        ca_acceptance.decode_acceptance(json.dumps(d).encode())


def test_the_history_is_newest_first_and_bounded():
    docs = [cadoc.from_pem(make_ca().pem, f"t{i}", "m", f"s{i}") for i in range(ca_acceptance.HISTORY_MAX + 3)]
    history: list[dict] = []
    for old, new in zip(docs, docs[1:], strict=False):
        history = ca_acceptance.decode_history(
            ca_acceptance.with_entry(history, ca_acceptance.history_entry(old, new, "accepted", _record())))
    assert len(history) == ca_acceptance.HISTORY_MAX
    assert history[0]["doc"]["snapshot"] == docs[-2].snapshot
    assert history[0]["new_spki_sha256"] == docs[-1].spki_sha256
    assert history[0]["acceptance"]["reason"] == "rotation"


@pytest.mark.parametrize("blob", [None, b"", b"garbage", b"{}", b'[1, {"doc": 2}]'])
def test_an_unreadable_history_reads_as_empty(blob):
    assert ca_acceptance.decode_history(blob) == []


def test_the_acceptance_and_history_keys_live_beside_the_published_ca():
    layout = Layout("statesync/icinga2", "master1")
    assert (layout.ca, layout.ca_accept, layout.ca_history) == (
        "statesync/icinga2/ca", "statesync/icinga2/ca-accept", "statesync/icinga2/ca-history")
