"""Where things are on disk: Icinga 2's state directory and statesync's own files in a root.

It does for the disk what ``snapshot/layout.py`` does for Consul's keys: every name is
written here once, and every module that opens one of these files asks this module for
its path. Names are relative (to the state directory for Icinga's, to the root for
statesync's); the helpers are pure and touch no file.
"""
from __future__ import annotations

from typing import Iterable

# -- Icinga 2's state directory (/var/lib/icinga2) -----------------------------------------

CA_DIR = "ca"                              # the master's CA: exists on a master only
CA_CERT = f"{CA_DIR}/ca.crt"               # the master's CA certificate
CA_KEY = f"{CA_DIR}/ca.key"                # ... and its private key
CERTS_DIR = "certs"                        # every node's own certificate and its trust
LOCAL_CA = f"{CERTS_DIR}/ca.crt"           # the CA a node trusts (a satellite has no ca/)
TRUSTED_PARENT = f"{CERTS_DIR}/trusted-parent.crt"  # what `node setup --trustedcert` usually writes
TICKET = f"{CERTS_DIR}/ticket"
REQUESTS_DIR = "certificate-requests"      # the master's pending requests, <sha256 of DER>.json
# What makes a directory "hold Icinga 2 state": either of these.
STATE_DIRS = (CA_DIR, CERTS_DIR)


def node_cert(name: str) -> str:
    """A node's certificate, ``certs/<name>.crt``; ``name`` is its CN (see ``node_cert_name``)."""
    return f"{CERTS_DIR}/{name}.crt"


def node_key(name: str) -> str:
    """A node's private key, ``certs/<name>.key``."""
    return f"{CERTS_DIR}/{name}.key"


def node_csr(name: str) -> str:
    """A node's certificate request, ``certs/<name>.csr``."""
    return f"{CERTS_DIR}/{name}.csr"


def node_cert_name(cert_files: Iterable[str], configured: str, node: str) -> str:
    """The name Icinga 2 gives this node's certificate files (``certs/<name>.crt``).

    ``configured`` (guard.cert_name) wins. Otherwise the stem of the one ``*.key`` file
    in certs/ (Icinga 2 keeps exactly one: the node's), else the statesync node name.
    """
    if configured:
        return configured
    keys = sorted(n[:-4] for n in cert_files if n.endswith(".key") and len(n) > 4)
    return keys[0] if len(keys) == 1 else node


# -- statesync's own files in a root --------------------------------------------------------

# Everything statesync keeps in a root starts with this; the scanner never takes it into a snapshot.
INTERNAL_PREFIX = ".statesync-"
READY_FILE = INTERNAL_PREFIX + "ready"                 # Icinga 2 may start: the root is restored
LOCK_FILE = INTERNAL_PREFIX + "lock"                   # one writer per root (restore/rootlock)
STAGING_PREFIX = INTERNAL_PREFIX + "staging-"          # a restore's tree before the swap
ASIDE_DIR = INTERNAL_PREFIX + "aside"                  # what a restore moved out of the way
JOURNAL = INTERNAL_PREFIX + "restore-journal.json"     # the swap's journal
QUARANTINE_DIR = INTERNAL_PREFIX + "quarantine"        # certificates the guard moved aside
PARENT_PIN = INTERNAL_PREFIX + "parent.crt"            # the pinned parent certificate (default place)
ENROL_LEFT_OUT = INTERNAL_PREFIX + "enrol-left-out.json"  # registrations Icinga's check refused


__all__ = ["ASIDE_DIR", "CA_CERT", "CA_DIR", "CA_KEY", "CERTS_DIR", "ENROL_LEFT_OUT", "INTERNAL_PREFIX", "JOURNAL",
           "LOCAL_CA", "LOCK_FILE", "PARENT_PIN", "QUARANTINE_DIR", "READY_FILE", "REQUESTS_DIR", "STAGING_PREFIX",
           "STATE_DIRS", "TICKET", "TRUSTED_PARENT", "node_cert", "node_cert_name", "node_csr",
           "node_key"]
