"""Bringing a snapshot back onto disk: the disaster path and the sidecar's start-up.

``apply`` writes a verified snapshot into a staging directory inside the root and swaps it
in under a journal, so that a crash at any moment is finished or undone by the next run;
nothing in the root changes until every chunk has been fetched and checked. ``startup``
decides what a starting sidecar does with its root (restore an empty one, refuse a master
whose CA differs from its snapshot's) and writes the readiness marker Icinga 2 waits for;
``fresh`` decides whether a node with no snapshot may start empty.
"""
