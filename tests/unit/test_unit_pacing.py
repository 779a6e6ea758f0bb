"""min_interval's arithmetic (statesync/sidecar/pacing.py), without a daemon or a clock."""
from __future__ import annotations

from statesync.sidecar.pacing import Pacer

STATE = "icinga2.state"


def pacer() -> Pacer:
    return Pacer(((STATE, 60.0), ("api/zones/**", 10.0)), ("ca", "certs"))


def test_a_paced_files_first_change_goes_at_once():
    p = pacer()
    assert p.split({STATE}, 100.0) == ({STATE}, set())
    assert p.hold({STATE}, 100.0) == set()


def test_a_later_change_waits_until_the_interval_since_the_files_last_commit_is_over():
    p = pacer()
    p.committed({STATE}, 100.0)
    assert p.split({STATE}, 130.0) == (set(), {STATE})
    assert p.next_due() == 160.0
    assert p.take_due(159.9) == set()
    assert p.take_due(160.0) == {STATE}
    assert p.next_due() is None


def test_a_waiting_change_is_not_lost_when_nothing_else_happens():
    p = pacer()
    p.committed({STATE}, 0.0)
    p.hold({STATE}, 1.0)
    assert p.take_due(60.0) == {STATE}
    assert p.hold({STATE}, 60.0) == set()


def test_the_interval_counts_from_the_last_commit_not_from_the_last_change():
    p = pacer()
    p.committed({STATE}, 0.0)
    for t in (10.0, 20.0, 50.0):
        assert p.hold({STATE}, t) == {STATE}
    assert p.next_due() == 60.0
    assert p.hold({STATE}, 61.0) == set()


def test_other_paths_are_never_held_and_go_while_a_paced_one_waits():
    p = pacer()
    p.committed({STATE}, 0.0)
    assert p.split({STATE, "modified-attributes.conf"}, 5.0) == ({"modified-attributes.conf"}, {STATE})


def test_each_path_has_its_own_clock():
    p = pacer()
    p.committed({"api/zones/a/x.conf"}, 0.0)
    assert p.hold({"api/zones/a/x.conf", "api/zones/b/y.conf"}, 5.0) == {"api/zones/a/x.conf"}


def test_a_certificate_change_goes_at_once_and_takes_every_waiting_path_along():
    p = pacer()
    p.committed({STATE}, 0.0)
    assert p.split({STATE}, 5.0) == (set(), {STATE})
    assert p.split({"certs/n1.crt"}, 6.0) == ({"certs/n1.crt", STATE}, set())
    assert p.hold({STATE, "ca/ca.crt"}, 7.0) == set()
    p.committed({STATE, "certs/n1.crt"}, 7.0)
    assert p.next_due() is None


def test_the_ca_and_certs_directories_themselves_count_as_urgent_but_their_namesakes_do_not():
    p = pacer()
    assert p.urgent("certs") and p.urgent("ca/ca.key")
    assert not p.urgent("certs-old/x") and not p.urgent("api/certs/x")


def test_urgent_directories_below_a_named_state_subtree_are_matched_there():
    p = Pacer((("var/lib/icinga2/icinga2.state", 60.0),), ("var/lib/icinga2/ca", "var/lib/icinga2/certs"))
    p.committed({"var/lib/icinga2/icinga2.state"}, 0.0)
    assert p.split({"var/lib/icinga2/certs/n1.crt"}, 1.0)[1] == set()
    assert not p.urgent("certs/n1.crt")


def test_the_first_matching_rule_sets_the_interval_and_a_path_without_one_is_not_paced():
    p = Pacer((("api/**", 5.0), ("api/zones/**", 50.0)))
    assert p.interval("api/zones/z/a.conf") == 5.0
    assert p.interval("icinga2.state") == 0.0
    p.committed({"icinga2.state"}, 0.0)
    assert p.hold({"icinga2.state"}, 0.1) == set()


def test_without_rules_nothing_is_ever_held():
    p = Pacer((), ("ca", "certs"))
    assert not p.active
    assert p.split({STATE, "x"}, 0.0) == ({STATE, "x"}, set())
