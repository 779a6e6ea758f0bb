"""Which master's sidecar accepts and signs satellites: the one beside the CA key (docs/HA.md)."""
from __future__ import annotations

from statesync.disk import CA_KEY
from statesync.enrol.verdicts import standby_reason


def test_the_master_beside_the_ca_key_accepts():
    assert standby_reason(True, CA_KEY) == ""


def test_a_master_without_the_ca_key_stands_by_and_says_why():
    why = standby_reason(False, CA_KEY)
    assert why.startswith("standing by") and CA_KEY in why and "config sync" in why
