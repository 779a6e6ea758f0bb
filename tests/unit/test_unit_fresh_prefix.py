"""Unit tests for restore --if-empty's pure decision on a node with no snapshot (statesync.restore.fresh):
a mistyped node name must not pass for a new installation."""
from __future__ import annotations

from statesync.restore.fresh import refusal

ARGS = ("mastr1", "icinga/statesync", "icinga/statesync/ca")


def test_a_prefix_with_no_snapshot_and_no_published_ca_is_a_fresh_installation():
    assert refusal(*ARGS, nodes=[], ca=False) == ""


def test_other_nodes_with_snapshots_refuse_and_are_named():
    why = refusal(*ARGS, nodes=["master1", "master2"], ca=True)
    assert why.startswith("no snapshot of node mastr1 under icinga/statesync, but node(s) master1, master2 have "
                          "snapshots there: check --node")
    assert why.endswith("or pass --fresh to start this node with no state; nothing restored")


def test_a_published_ca_alone_refuses_and_names_its_key():
    assert "but a CA is published at icinga/statesync/ca:" in refusal(*ARGS, nodes=[], ca=True)


def test_what_the_token_cannot_see_refuses_rather_than_passing_for_empty():
    for nodes, ca in ((None, False), ([], None), (None, None)):
        assert "the token cannot see whether other nodes have snapshots there" in refusal(*ARGS, nodes=nodes, ca=ca)
