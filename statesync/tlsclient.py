"""The TLS client context of every connection statesync opens: to Icinga 2's API and to Consul.

It verifies the chain against the given CA (the system's CAs when none) and the host name, with
``VERIFY_X509_STRICT`` cleared. Python 3.13 turns that flag on by default, and it refuses a
certificate without key identifiers (no Subject Key Identifier on the CA, no Authority Key
Identifier on the leaf): Icinga 2 issues every certificate that way (2.13, 2.14 and 2.16), and an
operator's own CA for Consul may (``consul tls ca create`` adds them; an older OpenSSL recipe or
a home-grown CA may not). Cleared here, never left to the interpreter, so that one certificate
is accepted or refused the same way on every Python the image may ship (3.11 and 3.13 are
tested), as the consul CLI accepts it; chain, validity and host name are checked all the same.
"""
from __future__ import annotations

import ssl


def client_context(cafile: str | None = None, cadata: str | None = None) -> ssl.SSLContext:
    """A verifying client context. Raises OSError or ssl.SSLError when the CA cannot be loaded."""
    ctx = ssl.create_default_context(cafile=cafile, cadata=cadata)
    ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return ctx
