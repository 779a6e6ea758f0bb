"""Consul, and only Consul: the one package that imports the client library (python-consul2).

``client`` speaks Consul's HTTP API through the library's own endpoints (``kv``, ``txn``,
``session``, ``status``) over a keep-alive transport of ours, and holds, in one named
place each, the few things the library lacks. ``store`` is what the rest of statesync
sees: a small KV, transaction and session API whose every failure is one of statesync's
own exceptions (never the library's, never a ``False``). ``bulk`` streams many values
while a scan is still reading, and ``lock`` is the per-node writer lock that fences every
write. ``settings`` holds the plain settings types, so that ``config`` can build them
without loading the client.
"""
