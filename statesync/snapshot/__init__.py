"""The snapshot format, as pure code: what a snapshot is and how it is encoded.

``layout`` names every Consul key statesync uses (the one place that does), ``record`` is
the snapshot record and the head, ``manifest`` the file list, ``chunking`` the
content-addressed chunks, ``crypto`` the sealing of private keys and TicketSalt, ``globs``
the include and exclude patterns, ``diffing`` the comparison of two manifests and ``scan``
the reading of a tree into a manifest and chunks. Nothing here talks to Consul; only
``scan`` reads the filesystem. docs/FORMAT.md describes the same format in prose.
"""
