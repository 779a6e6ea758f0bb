"""Enrolment through Consul: satellites register, the master accepts and signs.

A satellite's sidecar registers ``<prefix>/satellites/<cn>`` (its token may write that key
only) while its certificate is a pending, self-signed request; the master's sidecar
validates every registration (``registration``), renders the accepted ones as Endpoint and
Zone objects into a config package of its own (``icinga_api``), and once each endpoint is
live signs the pending request (``requests``, ``pki.signing``) whose CN and public key were
registered. Icinga 2 delivers the certificate itself. docs/ENROL.md has the trust model.
"""
