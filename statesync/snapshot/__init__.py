"""The snapshot format, as pure code: what a snapshot is and how it is encoded.

``layout`` names every Consul key statesync uses (the one place that does), ``record`` is
the snapshot record and the head, ``manifest`` the file list, ``chunking`` the
content-addressed chunks, ``crypto`` the sealing of private keys and TicketSalt, ``diffing``
the comparison of two manifests and ``retention`` the choice of what to keep. Nothing here
talks to Consul or reads the local tree: reading a tree into a manifest and chunks is
``tree/``. docs/FORMAT.md describes the same format in prose.
"""
