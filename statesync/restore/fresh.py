"""Whether a node with no snapshot may start empty (``restore --if-empty``): a mistyped node name
must not pass for a new installation.

A node without a snapshot beside others that have one, or beside a published CA, is more likely
a mistyped node name than a new installation, and going on would let Icinga 2 create a new CA.
``refusal`` decides from what was seen (pure); ``refuse_unless_fresh`` reads it from Consul.
"""
from __future__ import annotations

from ..errors import PermissionDenied, RestoreRefused
from ..repo.repository import Repo


def refusal(node: str, prefix: str, ca_key: str, nodes: list[str] | None, ca: bool | None) -> str:
    """Why ``node`` may not start with no state under ``prefix``; "" when the prefix holds nothing
    at all. ``nodes`` are the nodes with snapshots there and ``ca`` whether a CA is published at
    ``ca_key``; None for either when the token may not see it."""
    if nodes == [] and ca is False:
        return ""
    if nodes:
        seen = f"node(s) {', '.join(nodes)} have snapshots there"
    elif ca:
        seen = f"a CA is published at {ca_key}"
    else:
        seen = "the token cannot see whether other nodes have snapshots there or a CA is published"
    return (f"no snapshot of node {node} under {prefix}, but {seen}: check --node "
            f"(STATESYNC_NODE), or pass --fresh to start this node with no state; nothing restored")


def refuse_unless_fresh(repo: Repo, node: str, prefix: str, role: str | None) -> None:
    """Raise RestoreRefused unless the prefix holds nothing at all (``refusal``)."""
    if role == "satellite":
        # A satellite's certificate comes from enrolment, never from a CA of its own: a new
        # satellite beside others is the normal way a fleet grows, not a typo to refuse.
        return
    layout = repo.layout
    try:
        nodes: list[str] | None = layout.nodes_with_snapshots(repo.store.keys(layout.nodes))
    except PermissionDenied:
        nodes = None  # a token for one node's prefix may not list the others
    try:
        ca: bool | None = repo.store.get(layout.ca) is not None
    except PermissionDenied:
        ca = None
    problem = refusal(node, prefix, layout.ca, nodes, ca)
    if problem:
        raise RestoreRefused(problem)
