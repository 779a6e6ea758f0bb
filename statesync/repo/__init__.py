"""The snapshot repository: a node's snapshots in Consul, read and written as whole units.

``repository.Repo`` joins the pure format (``snapshot``) with the Consul boundary
(``consul``): it commits a scan as one snapshot (chunks, manifest, record and head, the
head moved by check-and-set), loads and verifies snapshots, applies retention and collects
garbage. ``backup`` is the one pipeline from the local tree (``tree``) to a commit, scan,
stream, commit, that `statesync backup` and the daemon both run. ``rekey`` rewrites a node's
kept snapshots under a new key. Everything that
changes what Consul holds for a node goes through here.
"""
