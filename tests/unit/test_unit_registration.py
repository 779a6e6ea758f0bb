"""Satellite registrations (statesync.enrol.registration): the document, judging it, rendering it. Pure,
except the last test, which hands rendered output to the real Icinga 2 config validator."""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.enrol import registration as reg
from statesync.enrol import verdicts
from statesync.enrol.isolation import isolate
from statesync.enrol.registration import Accepted, Policy, Registration, Rejection
from statesync.enrol.verdicts import Evidence
from statesync.errors import CorruptData
from statesync.snapshot.layout import valid_node

CA = "c" * 64
POLICY = Policy(ca_spki_sha256=CA, reserved=frozenset({"master1", "global-templates", "director-global"}))
FAST = settings(max_examples=150, deadline=None, database=None)

HOSTILE_NAMES = [
    "",
    '"',
    'sat1"; object ApiUser "root" { password = "x" }; //',
    "sat\n1",
    "sat1\n",  # a `$` anchored pattern would let the trailing newline through
    "sat\r1",
    "${ApiUser}",
    "sat$1",
    "sat{1",
    "sat 1",
    "sat\\1",
    "sat'1",
    "sat/1",
    "sat\x001",
    "s\u0430t1",  # Cyrillic a
    "sat\uff11",  # fullwidth digit one
    "sat1\u202e",  # right-to-left override
    "a" * 254,
    "a" * 300,
    "..",
    "../etc",
    ".sat1",
    "sat1.",
    "-sat1",
    "sat1-",
    "_sat1",
]


def _doc(**changes) -> dict:
    doc = {"version": 1, "cn": "sat1", "zone": "sat1", "parent_zone": "master", "host": "", "port": 0,
           "key_sha256": "a" * 64, "request_sha256": "b" * 64, "ca_spki_sha256": CA, "node": "sat1",
           "time": "2026-12-01T20:00:00+00:00"}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def _raw(**changes) -> bytes:
    return json.dumps(_doc(**changes)).encode()


def _reg(cn: str = "sat1", zone: str | None = None, **changes) -> Registration:
    fields = _doc(cn=cn, zone=zone or cn, **changes)
    return Registration(**fields)


def _stored(*regs: Registration) -> dict[str, bytes]:
    return {r.cn: reg.encode(r) for r in regs}


def _proof(stored: dict[str, bytes]) -> Evidence:
    """Every registration proven by a pending request of its own."""
    proven = set()
    for raw in stored.values():
        try:
            r = reg.decode(raw)
        except CorruptData:
            continue
        proven.add((r.cn, r.key_sha256, r.request_sha256))
    return Evidence(proven=frozenset(proven), requested=frozenset(cn for cn, _, _ in proven))


def _accept(stored: dict[str, bytes], policy: Policy = POLICY) -> verdicts.Verdicts:
    """The cross-checks alone: every registration proven, and the operator authorised each zone it names."""
    pairs = []
    for raw in stored.values():
        try:
            r = reg.decode(raw)
        except CorruptData:
            continue
        pairs.append((r.cn, r.zone))
    return verdicts.accept(stored, replace(policy, zones=policy.zones + tuple(pairs)), _proof(stored))


# --- names, hosts, ports -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "7", "sat1", "Sat_1", "sat-1.example.com", "a" * 253, "a.b-c_d"])
def test_a_cn_of_letters_digits_dots_underscores_and_dashes_is_a_valid_name(name):
    assert reg.valid_name(name)


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_a_name_that_could_escape_its_quotes_or_mislead_is_not_a_valid_name(name):
    assert not reg.valid_name(name)


@pytest.mark.parametrize("value", [None, 1, b"sat1", ["sat1"]])
def test_a_value_that_is_not_a_string_is_not_a_valid_name(value):
    assert not reg.valid_name(value)


@pytest.mark.parametrize("host", ["sat1.example.com", "localhost", "10.0.0.1", "::1", "2001:db8::5665",
                                  "a" * 63 + ".example.com", "sat-1.internal"])
def test_a_dns_name_or_an_ip_literal_is_a_valid_host(host):
    assert reg.valid_host(host)


@pytest.mark.parametrize("host", ["", "sat 1", 'sat"1', "sat1\n", "a" * 64 + ".com", "-sat.com", "sat-.com",
                                  "a..b", "sat1.", "1.2.3", "256.1.1.1", "[::1]", "fe80::1%eth0",
                                  'fe80::1%"; object ApiUser', "s\u0430t.com", "sat_1.com", "${host}",
                                  ("a" * 62 + ".") * 4 + "com", 10],
                         ids=repr)
def test_anything_else_is_not_a_valid_host(host):
    assert not reg.valid_host(host)


@pytest.mark.parametrize("port, ok", [(0, True), (5665, True), (65535, True), (-1, False), (65536, False),
                                      (True, False), ("5665", False), (5665.0, False)])
def test_a_port_is_an_integer_from_0_to_65535_and_a_bool_is_not_one(port, ok):
    assert reg.valid_port(port) is ok


# --- the document --------------------------------------------------------------------------------

def test_a_registration_round_trips_through_encode_and_decode():
    r = _reg(host="sat1.example.com", port=5665)
    assert reg.decode(reg.encode(r)) == r


def test_the_encoding_is_compact_json_with_sorted_keys():
    raw = reg.encode(_reg())
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_host_and_port_may_be_left_out():
    r = reg.decode(_raw(host=..., port=...))
    assert (r.host, r.port) == ("", 0)


def test_unknown_fields_are_ignored():
    assert reg.decode(_raw(labels={"dc": "x"}, future=[1, 2])) == reg.decode(_raw())


def test_encode_refuses_a_document_the_master_would_refuse_as_too_large():
    with pytest.raises(ValueError, match="bytes"):
        reg.encode(_reg(time="x" * 5000))


@pytest.mark.parametrize("raw, problem", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[1, 2]", "not a JSON object"),
    (b'"sat1"', "not a JSON object"),
    (b"null", "not a JSON object"),
    # 2,000 deep: 3.11's json refused it, 3.13's parsed it ("not a JSON object"); statesync's own
    # bound (statesync/jsonload.py) gives one answer on every Python
    (b"[" * 2000 + b"]" * 2000, "registration is nested more than 100 deep"),
    (_raw(version=...), "'version' is missing"),
    (_raw(version="1"), "'version' is missing or not an integer"),
    (_raw(version=True), "'version' is missing or not an integer"),
    (_raw(version=2), "version 2 is newer than 1"),
    (_raw(version=0), "version 0 does not exist"),
    (_raw(cn=...), "'cn' is missing"),
    (_raw(ca_spki_sha256=...), "'ca_spki_sha256' is missing"),
    (_raw(cn=1), "'cn' is not a string"),
    (_raw(zone=None), "'zone' is not a string"),
    (_raw(time=["now"]), "'time' is not a string"),
    (_raw(host=None), "'host' is not a string"),
    (_raw(port="5665"), "'port' is not an integer"),
    (_raw(port=True), "'port' is not an integer"),
    (_raw(port=5665.0), "'port' is not an integer"),
    (b'{"version": 1, "port": NaN}', "NaN"),
    (b'{"version": 1, "cn": "sat1", "cn": "master"}', "'cn' twice"),
    (_raw(pad="x" * 4096), "too large"),
], ids=itertools.count())
def test_an_undecodable_document_raises_corrupt_data_naming_the_problem(raw, problem):
    with pytest.raises(CorruptData, match=re.escape(problem)):
        reg.decode(raw)


def test_a_version_2_document_is_rejected_even_when_it_lacks_every_version_1_field():
    with pytest.raises(CorruptData, match="newer"):
        reg.decode(b'{"version": 2, "satellite": {"name": "sat1"}}')


def test_a_document_of_exactly_the_size_limit_is_accepted():
    raw = _raw(pad="")
    raw = _raw(pad="x" * (reg.MAX_DOCUMENT_BYTES - len(raw)))
    assert len(raw) == reg.MAX_DOCUMENT_BYTES
    assert reg.decode(raw).cn == "sat1"


# --- judging one registration ----------------------------------------------------------------------

def test_a_well_formed_registration_is_accepted_as_it_was_written():
    assert reg.judge("sat1", _raw(host="10.0.0.7", port=5665), POLICY) == _reg(host="10.0.0.7", port=5665)


REJECTIONS = [
    # (key, document changes, policy changes, what the reason says)
    ('sat"1', {"cn": 'sat"1'}, {}, "the key's name"),
    ("sat1", {"cn": "sat2"}, {}, "is not the key's name"),
    ("sat1", {"cn": "SAT1"}, {}, "is not the key's name"),
    ("sat1", {"zone": 'z"; object ApiUser "x'}, {}, "zone"),
    ("sat1", {"zone": "${x}"}, {}, "zone"),
    ("sat1", {"parent_zone": "../etc"}, {}, "parent_zone"),
    ("sat1", {"parent_zone": "master\n"}, {}, "parent_zone"),
    ("sat1", {"host": 'x" }\nobject ApiUser "y'}, {}, "host"),
    ("sat1", {"host": "fe80::1%eth0"}, {}, "host"),
    ("sat1", {"port": 70000}, {}, "port"),
    ("sat1", {"port": -1}, {}, "port"),
    ("MASTER1", {"cn": "MASTER1"}, {}, "cn 'MASTER1' is reserved"),
    ("sat1", {"zone": "Global-Templates"}, {}, "zone 'Global-Templates' is reserved"),
    ("sat1", {"zone": "master"}, {}, "zone 'master' is a parent zone"),
    ("Master", {"cn": "Master"}, {}, "cn 'Master' is a parent zone"),
    ("sat1", {"zone": "MASTER"}, {}, "zone 'MASTER' is a parent zone"),
    ("sat1", {"parent_zone": "other"}, {}, "parent_zone 'other' is not one of master"),
    ("sat1", {"parent_zone": "Master"}, {}, "parent_zone 'Master' is not one of master"),
    ("sat1", {"ca_spki_sha256": "d" * 64}, {}, "registered under another CA"),
    ("web1", {"cn": "web1"}, {"allow": ("sat*", "edge-?")}, "matches no allowed pattern"),
    ("sat1", {}, {"allow": ()}, "matches no allowed pattern"),
    ("sat1", {"key_sha256": "A" * 64}, {}, "key_sha256"),
    ("sat1", {"key_sha256": "a" * 63}, {}, "key_sha256"),
    ("sat1", {"request_sha256": "../" + "b" * 61}, {}, "request_sha256"),
    ("sat1", {"node": "a/b"}, {}, "node"),
    ("sat1", {"time": "yesterday"}, {}, "time"),
    ("sat1", {"version": 2}, {}, "newer"),
    ("sat1", {"cn": 7}, {}, "'cn' is not a string"),
]


@pytest.mark.parametrize("key, changes, policy, reason", REJECTIONS, ids=itertools.count())
def test_each_rule_rejects_with_a_reason_that_says_which(key, changes, policy, reason):
    verdict = reg.judge(key, _raw(**changes), replace(POLICY, **policy))
    assert isinstance(verdict, Rejection)
    assert verdict.key == key
    assert reason in verdict.reason


def test_undecodable_bytes_are_a_rejection_not_an_exception():
    verdict = reg.judge("sat1", b"\x00garbage", POLICY)
    assert verdict == Rejection("sat1", "registration is not JSON")


def test_an_allow_glob_matches_the_cn_case_sensitively():
    policy = replace(POLICY, allow=("sat*",))
    assert isinstance(reg.judge("sat1", _raw(), policy), Registration)
    assert isinstance(reg.judge("SAT1", _raw(cn="SAT1"), policy), Rejection)


def test_a_satellite_may_name_any_of_the_configured_parent_zones():
    policy = replace(POLICY, parent_zones=("master", "dc2"))
    assert reg.judge("sat1", _raw(parent_zone="dc2"), policy).parent_zone == "dc2"


def _hostile_documents():
    for bad in HOSTILE_NAMES:
        yield bad, {"cn": bad}
        for field in ("zone", "parent_zone", "host", "node", "time", "key_sha256"):
            # no host is a valid host, and node names are not rendered: "sat1-" is one
            if not (field == "host" and not bad or field == "node" and valid_node(bad)):
                yield "sat1", {field: bad}
        yield "sat1", {"cn": bad}


@pytest.mark.parametrize("key, changes", list(_hostile_documents()), ids=itertools.count())
def test_a_hostile_value_is_rejected_with_one_short_printable_line(key, changes):
    verdict = reg.judge(key, _raw(**changes), POLICY)
    assert isinstance(verdict, Rejection)
    for line in (verdict.reason, str(verdict)):
        assert line.isascii() and line.isprintable()
        assert len(line) < 400


def test_a_long_value_is_shown_truncated_with_its_length():
    text = reg.shown("x" * 300)
    assert text.startswith("'xxx") and text.endswith("... (300 characters)")
    assert len(text) < 100


# --- judging all of them ---------------------------------------------------------------------------

def test_accepted_registrations_are_sorted_by_cn_and_every_key_gets_one_verdict():
    stored = _stored(_reg("sat3"), _reg("sat1"), _reg("sat2"))
    stored["bad"] = b"[]"
    v = _accept(stored)
    assert [r.cn for r in v.accepted] == ["sat1", "sat2", "sat3"]
    assert [j.key for j in v.rejected] == ["bad"]


def test_nothing_registered_accepts_nothing():
    assert _accept({}) == verdicts.Verdicts(accepted=(), rejected=())


def test_registrations_of_one_zone_that_disagree_on_the_parent_are_all_rejected():
    policy = replace(POLICY, parent_zones=("master", "dc2"))
    stored = _stored(_reg("sat1", "edge"), _reg("sat2", "edge", parent_zone="dc2"), _reg("sat3"))
    v = _accept(stored, policy)
    assert [r.cn for r in v.accepted] == ["sat3"]
    assert [j.key for j in v.rejected] == ["sat1", "sat2"]
    assert all("conflicting parent zones 'dc2', 'master'" in j.reason for j in v.rejected)


def test_a_zone_keeps_its_first_endpoints_by_cn_and_rejects_the_rest():
    stored = _stored(*(_reg(f"sat{i}", "edge") for i in (4, 2, 3, 1)))
    v = _accept(stored)
    assert [r.cn for r in v.accepted] == ["sat1", "sat2"]
    assert [j.key for j in v.rejected] == ["sat3", "sat4"]
    assert "zone 'edge' already has 2 endpoints ('sat1', 'sat2')" in v.rejected[0].reason


def test_the_endpoint_limit_per_zone_is_the_policys():
    v = _accept(_stored(_reg("sat1", "edge"), _reg("sat2", "edge")), replace(POLICY, max_endpoints_per_zone=1))
    assert [r.cn for r in v.accepted] == ["sat1"]


def test_a_registration_rejected_on_its_own_takes_no_place_in_its_zone():
    stored = _stored(_reg("sat1", "edge", ca_spki_sha256="d" * 64), _reg("sat2", "edge"), _reg("sat3", "edge"))
    assert [r.cn for r in _accept(stored).accepted] == ["sat2", "sat3"]


def test_a_zone_may_share_its_name_with_another_satellites_endpoint():
    stored = _stored(_reg("sat1", "sat2"), _reg("sat2", "edge"))
    assert [r.cn for r in _accept(stored).accepted] == ["sat1", "sat2"]


def test_cns_that_differ_only_by_case_are_all_rejected():
    v = _accept(_stored(_reg("sat1"), _reg("SAT1", "other"), _reg("sat2")), POLICY)
    assert [r.cn for r in v.accepted] == ["sat2"]
    assert {j.key for j in v.rejected} == {"sat1", "SAT1"}
    assert all("differs only by case" in j.reason for j in v.rejected)


def test_zones_that_differ_only_by_case_are_all_rejected():
    v = _accept(_stored(_reg("sat1", "edge"), _reg("sat2", "EDGE"), _reg("sat3", "edge")), POLICY)
    assert v.accepted == ()
    assert all("zone" in j.reason and "differs only by case" in j.reason for j in v.rejected)


def test_a_zone_that_is_another_registrations_parent_is_rejected():
    # judge never lets this through (a parent zone is no satellite's zone); the check is the second line
    child, parent = _reg("sat1", "edge", parent_zone="mid"), _reg("sat2", "mid")
    assert [(m[0].cn, why) for m, why in verdicts._nested([child, parent], set())] == [
        ("sat2", "zone 'mid' is the parent zone of another registration")]


def test_a_registration_naming_another_registrations_zone_as_parent_is_rejected_through_accept():
    v = _accept(_stored(_reg("sat1", "edge", parent_zone="sat2"), _reg("sat2")), POLICY)
    assert [r.cn for r in v.accepted] == ["sat2"]
    assert v.rejected[0].key == "sat1"


# --- rendering -------------------------------------------------------------------------------------

EXPECTED = """\
// Managed by statesync: the satellites accepted from the registrations in Consul.
// Do not edit: statesync replaces this file whenever the registrations change.

object Endpoint "sat1" { // key_sha256 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  host = "sat1.example.com"
  port = "5665"
}

object Endpoint "sat2" { // key_sha256 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  host = "2001:db8::2"
}

object Zone "edge" {
  endpoints = [ "sat1", "sat2" ]
  parent = "master"
}

object Endpoint "sat3" { // key_sha256 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
}

object Zone "sat3" {
  endpoints = [ "sat3" ]
  parent = "master"
}
"""

RENDERED = [_reg("sat3"), _reg("sat2", "edge", host="2001:db8::2"),
            _reg("sat1", "edge", host="sat1.example.com", port=5665)]


def test_accepted_registrations_render_as_endpoints_and_zones_in_their_parents_directory():
    assert reg.render(RENDERED) == {"zones.d/master/statesync-satellites.conf": EXPECTED}


def test_rendering_is_byte_identical_whatever_the_order_of_its_input():
    outputs = {json.dumps(reg.render(order)) for order in itertools.permutations(RENDERED)}
    assert len(outputs) == 1


def test_each_parent_zone_gets_a_file_of_its_own():
    files = reg.render([_reg("sat1"), _reg("sat2", parent_zone="dc2")])
    assert sorted(files) == ["zones.d/dc2/statesync-satellites.conf", "zones.d/master/statesync-satellites.conf"]
    assert 'object Endpoint "sat2"' in files["zones.d/dc2/statesync-satellites.conf"]


def test_the_rendered_package_says_which_cn_was_accepted_with_which_key():
    # The active package is the record of what was accepted: Icinga deletes old request files.
    files = reg.render([_reg("sat1", key_sha256="c" * 64), _reg("sat2", parent_zone="dc2")])
    assert reg.accepted_entries(files) == {"sat1": Accepted("c" * 64, "sat1", "master"),
                                           "sat2": Accepted("a" * 64, "sat2", "dc2")}
    assert reg.accepted_entries({"x.conf": 'object Endpoint "sat1" {\n}\n'}) == {}
    assert reg.accepted_entries(reg.render(RENDERED))["sat2"] == Accepted("a" * 64, "edge", "master")


def test_nothing_accepted_renders_no_files():
    assert reg.render(()) == {}


@pytest.mark.parametrize("bad", [{"cn": 'sat1" { }'}, {"zone": "a\nb"}, {"parent_zone": "../x"},
                                 {"host": 'h"'}, {"port": 70000}, {"port": True}], ids=repr)
def test_render_refuses_a_name_that_judging_would_have_rejected(bad):
    with pytest.raises(ValueError, match="refusing"):
        reg.render([replace(_reg(), **bad)])


def test_render_refuses_one_endpoint_twice_or_a_zone_with_two_parents():
    with pytest.raises(ValueError, match="twice"):
        reg.render([_reg("sat1"), _reg("SAT1", "other")])
    with pytest.raises(ValueError, match="two parent zones"):
        reg.render([_reg("sat1", "edge"), _reg("sat2", "edge", parent_zone="dc2")])


def test_the_fingerprint_changes_exactly_when_the_files_do():
    files = reg.render(RENDERED)
    assert reg.fingerprint_of(files) == reg.fingerprint_of(reg.render(RENDERED[::-1]))
    assert reg.fingerprint_of(files) != reg.fingerprint_of(reg.render(RENDERED[:2]))
    assert reg.fingerprint_of({"ab": "c"}) != reg.fingerprint_of({"a": "bc"})
    assert reg.fingerprint_of({}) != reg.fingerprint_of({"": ""})
    assert re.fullmatch(r"[0-9a-f]{64}", reg.fingerprint_of({}))


# --- properties ------------------------------------------------------------------------------------

_ALPHABET = st.sampled_from(list("ab1.-_Z") + ['"', " ", "\n", "$", "{", "\\", "\u0430", "A", "B"])
_GOOD = st.sampled_from(["sat1", "sat2", "sat3", "SAT1", "edge", "EDGE", "sat1.example.com"])
# mostly names that pass, so that the cross-checks and the rendering see real work
_NAMES = st.one_of(_GOOD, _GOOD, _GOOD, _GOOD, _GOOD, _GOOD, st.text(_ALPHABET, max_size=6),
                   st.sampled_from(["master", "MASTER", "master1", "x" * 260]))
_REG = st.fixed_dictionaries({
    "cn": _NAMES, "zone": _NAMES, "parent_zone": st.sampled_from(["master"] * 4 + ["dc2"] * 2 + ["Master", 'm"']),
    "host": st.sampled_from(["", "", "10.0.0.1", "h.example", "::1", "", "", 'h"']),
    "port": st.sampled_from([0, 0, 0, 5665, 5665, 70000]),
    "ca_spki_sha256": st.sampled_from([CA] * 7 + ["d" * 64]),
})


@FAST
@given(st.lists(_REG, max_size=8), st.booleans())
def test_every_key_gets_one_verdict_and_every_accepted_one_is_rendered_once_with_valid_names(docs, mismatch):
    stored = {("x" + d["cn"]) if mismatch and i % 2 else d["cn"]: _raw(**d) for i, d in enumerate(docs)}
    policy = replace(POLICY, parent_zones=("master", "dc2"))
    v = _accept(stored, policy)
    keys = [r.cn for r in v.accepted] + [j.key for j in v.rejected]
    assert sorted(keys) == sorted(stored)
    text = "".join(reg.render(v.accepted).values())
    for r in v.accepted:
        assert text.count(f'object Endpoint "{r.cn}" {{') == 1
    for quoted in re.findall(r'"([^"]*)"', text):
        assert reg.valid_name(quoted) or reg.valid_host(quoted) or quoted.isdigit()
    assert text.count('"') % 2 == 0


# --- standing, incumbents and the authorised zone (issue 23) ---------------------------------------

KEY1, KEY2 = "1" * 64, "2" * 64


def _active(*regs: Registration) -> dict[str, Accepted]:
    """What an active package rendered from ``regs`` records."""
    return reg.accepted_entries(reg.render(list(regs)))


def _requests(*regs: Registration) -> dict:
    """Evidence fields for pending requests that prove ``regs``."""
    return {"proven": frozenset((r.cn, r.key_sha256, r.request_sha256) for r in regs),
            "requested": frozenset(r.cn for r in regs)}


def test_an_unproven_case_twin_zone_cannot_unenrol_an_accepted_satellite_whose_request_aged_out():
    # Old code: both refused as case twins, and sat1's Endpoint and Zone vanished from the master.
    victim = _reg("sat1", "z-sat1", key_sha256=KEY1)
    hostile = _reg("sat2", "Z-SAT1", key_sha256=KEY2)
    policy = replace(POLICY, zones=(("sat1", "z-sat1"), ("sat2", "Z-SAT1")))  # even were it authorised
    v = verdicts.accept(_stored(victim, hostile), policy, Evidence(active=_active(victim)))
    assert v.accepted == (victim,) and v.waiting == (hostile,) and v.rejected == ()


def test_a_proven_newcomer_never_displaces_an_accepted_satellite_in_any_cross_check():
    victim = _reg("sat1", "z-sat1", key_sha256=KEY1)
    policy = replace(POLICY, zones=(("sat1", "z-sat1"), ("sat2", "Z-SAT1"), ("sat2", "z-sat1")),
                     max_endpoints_per_zone=1, parent_zones=("master", "dc2"))
    for newcomer, why in ((_reg("sat2", "Z-SAT1", key_sha256=KEY2), "differs only by case"),
                          (_reg("sat2", "z-sat1", key_sha256=KEY2), "already has 1 endpoints ('sat1')"),
                          (_reg("sat2", "z-sat1", key_sha256=KEY2, parent_zone="dc2"), "conflicting parent"),
                          (_reg("SAT1", "z-sat1", key_sha256=KEY2), "differs only by case")):
        p = replace(policy, zones=policy.zones + ((newcomer.cn, newcomer.zone),))
        v = verdicts.accept(_stored(victim, newcomer), p, Evidence(active=_active(victim), **_requests(newcomer)))
        assert v.accepted == (victim,), (newcomer, v)
        assert [j.key for j in v.rejected] == [newcomer.cn] and why in v.rejected[0].reason, v.rejected


def test_a_newcomer_whose_name_sorts_first_never_evicts_a_member_of_a_full_zone():
    # Old code kept a zone's members by name order: "sat-a0" pushed out the enrolled "sat-a2".
    members = [_reg("sat-a1", "zone-a", key_sha256=KEY1), _reg("sat-a2", "zone-a", key_sha256=KEY1)]
    newcomer = _reg("sat-a0", "zone-a", key_sha256=KEY2)
    policy = replace(POLICY, zones=(("sat-a*", "zone-a"),))
    v = verdicts.accept(_stored(*members, newcomer), policy, Evidence(active=_active(*members), **_requests(newcomer)))
    assert [r.cn for r in v.accepted] == ["sat-a1", "sat-a2"]
    assert v.rejected[0].key == "sat-a0" and "already has 2 endpoints ('sat-a1', 'sat-a2')" in v.rejected[0].reason


def test_newcomers_alone_keep_the_old_rules():
    twins = _stored(_reg("sat1", "edge"), _reg("sat2", "EDGE"))
    assert _accept(twins).accepted == ()


@pytest.mark.parametrize("cn, zone, zones, ok", [
    ("sat1", "sat1", (), True),
    ("sat1", "sat2", (), False),                       # joining another satellite's zone
    ("sat1", "SAT1", (), False),                       # its own name in another case is another zone
    ("sat-a1", "zone-a", (("sat-a*", "zone-a"),), True),
    ("sat-a1", "sat-a1", (("sat-a*", "zone-a"),), False),  # a mapped CN gets the mapped zones only
    ("zone-a", "zone-a", (("sat-a*", "zone-a"),), False),  # a mapped zone is nobody's own
    ("ZONE-A", "ZONE-A", (("sat-a*", "zone-a"),), False),
    ("sat-b1", "sat-b1", (("sat-a*", "zone-a"),), True),
    ("sat-a1", "zone-b", (("sat-a*", "zone-a"), ("sat-a1", "zone-b")), True),
], ids=itertools.count())
def test_the_zone_is_authorised_by_the_master_not_claimed_by_the_satellite(cn, zone, zones, ok):
    verdict = reg.judge(cn, _raw(cn=cn, zone=zone), replace(POLICY, zones=zones))
    assert isinstance(verdict, Registration) == ok, verdict
    if not ok:
        assert "is not authorised for this cn" in verdict.reason and "enrol.zones" in verdict.reason


def test_a_zone_defined_outside_the_package_is_refused_whatever_its_case():
    policy = replace(POLICY, zones=(("sat3", "Legacy-DC"),), defined_zones=frozenset({"legacy-dc"}))
    verdict = reg.judge("sat3", _raw(cn="sat3", zone="Legacy-DC"), policy)
    assert isinstance(verdict, Rejection) and "defined outside statesync's package" in verdict.reason


def test_an_enrolled_satellite_cannot_move_to_another_zone_without_a_new_request():
    # Old code rendered the moved registration: the package's key alone vouched for it.
    policy = replace(POLICY, zones=(("sat-a1", "zone-a"), ("sat-a1", "zone-b")))
    was = _reg("sat-a1", "zone-a", key_sha256=KEY1)
    moved = replace(was, zone="zone-b")
    v = verdicts.accept(_stored(moved), policy, Evidence(active=_active(was)))
    assert v.accepted == () and "takes a new certificate request" in v.rejected[0].reason
    proven = Evidence(active=_active(was), **_requests(moved))
    assert verdicts.accept(_stored(moved), policy, proven).accepted == (moved,)


def test_a_key_hash_that_no_request_for_its_cn_has_is_refused_and_one_without_any_request_waits():
    spoofed = _reg("sat2", key_sha256=KEY2)
    real = replace(spoofed, key_sha256=KEY1)
    v = verdicts.accept(_stored(spoofed), POLICY, Evidence(**_requests(real)))
    assert v.accepted == () and v.rejected == (Rejection("sat2", verdicts.UNPROVEN),)
    v = verdicts.accept(_stored(spoofed), POLICY, Evidence())
    assert v.waiting == (spoofed,) and v.rejected == () and v.accepted == ()


def test_a_registration_left_out_is_refused_until_it_changes():
    r = _reg("sat3")
    left = {"sat3": (reg.digest(r), "critical/config: Object 'sat3' of type 'Zone' re-defined")}
    v = verdicts.accept(_stored(r), POLICY, Evidence(left_out=left, **_requests(r)))
    assert v.accepted == () and "left out" in v.rejected[0].reason and "re-defined" in v.rejected[0].reason
    changed = replace(r, host="10.0.0.3")
    assert verdicts.accept(_stored(changed), POLICY, Evidence(left_out=left, **_requests(changed))).accepted == (changed,)


# --- isolating what Icinga's config check fails with -----------------------------------------------

def _checker(bad: set):
    calls = []

    def validate(items):
        calls.append(list(items))
        found = [i for i in items if i in bad]
        return (not found), (f"fails with {found[0]}" if found else "")
    return validate, calls


@pytest.mark.parametrize("n, bad", [(1, {0}), (5, {4}), (8, {2, 5}), (8, {0, 7}), (2, {1}), (16, {9})],
                         ids=itertools.count())
def test_isolation_leaves_out_exactly_the_newcomers_the_check_fails_with(n, bad):
    base, newcomers = ["inc1", "inc2"], list(range(n))
    validate, calls = _checker(bad)
    ok_full, why = validate(base + newcomers)
    calls.clear()
    found = isolate(base, newcomers, validate, why, budget=12)
    assert found.base_ok and [b for b, _ in found.bad] == sorted(bad) and not found.untried
    assert sorted(found.good) == [i for i in newcomers if i not in bad]
    assert all(w == f"fails with {b}" for b, w in found.bad)
    assert found.tries == len(calls) <= 12 and all(c[:2] == base for c in calls)


def test_isolation_blames_nobody_when_the_accepted_satellites_alone_fail():
    validate, _ = _checker({"inc1"})
    found = isolate(["inc1"], [1, 2], validate, "fails with inc1")
    assert not found.base_ok and found.bad == () and found.untried == (1, 2)


def test_isolation_stops_at_its_budget_and_blames_only_what_it_proved():
    validate, calls = _checker({13})
    found = isolate([], list(range(16)), validate, "fails with 13", budget=3)
    assert found.tries == len(calls) == 3 and found.bad == ()
    assert set(found.good) | set(found.untried) == set(range(16)) and 13 in found.untried
