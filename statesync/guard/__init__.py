"""The CA guard: the master publishes its CA, each satellite compares and reacts.

``publish`` is the master's side: after each commit it publishes the CA of the snapshot at
``<prefix>/ca``. ``logic`` is the pure decision (match, same-key renewal, mismatch, cannot
tell) from the published and the local certificates; ``satellite`` watches the published
CA, confirms a mismatch before it acts and never acts on a doubt; ``quarantine`` moves the
node's certificates aside (never deleting them) and ``triggers`` restart Icinga 2 so that it
enrols again. ``settings`` holds the ``guard.*`` settings.
"""
