"""The identity of an Icinga 2 CA, as pure code: X.509 parsing and fingerprints.

``fingerprint`` names a certificate by the SHA-256 of its public key (SubjectPublicKeyInfo),
the identity that survives a renewal, and ``cadoc`` is the document a master publishes at
``<prefix>/ca`` and every satellite compares with. Both the start-up restore and the guard
decide on these fingerprints, so they sit below both.
"""
