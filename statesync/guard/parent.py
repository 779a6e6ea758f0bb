"""Pinning the parent endpoint's certificate for a satellite's next enrolment.

``icinga2 node setup --trustedcert FILE`` trusts the parent whose certificate is in FILE.
A file fixed at deployment pins the master's certificate of the *old* CA, so once the CA
changed the re-enrolment fails. The guard writes FILE itself instead: it fetches the
certificate the parent presents on its API port and writes it only when that certificate
was issued by the CA published in Consul. The handshake itself does not verify anything
(the satellite holds no trust anchor for the parent yet); ``pki.chain`` does, against
the published CA.
"""
from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from pathlib import Path

import structlog

from ..config import Config
from ..consul.backoff import Backoff
from ..consul.store import Store
from ..disk import LOCAL_CA, PARENT_PIN
from ..errors import CorruptData, ParentNotVerified, ParentUnreachable, StatesyncError
from ..fsutil import write_atomic
from ..pki import cadoc
from ..pki.chain import verify_issued_by

log = structlog.get_logger(__name__)

FETCH_TIMEOUT = 10.0
# Start-up pinning retries: the parent may still be starting, or not yet on the new CA.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0


def trusted_parent_file(cfg: Config) -> Path:
    """Where the pinned parent certificate goes (``guard.trusted_parent_file``)."""
    return Path(cfg.guard.trusted_parent_file) if cfg.guard.trusted_parent_file else Path(cfg.root) / PARENT_PIN


def split_host_port(host_port: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (as ``parsing_icinga.parse_parent_host`` normalizes) -> (host, port)."""
    host, _, port = host_port.rpartition(":")
    return host.strip("[]"), int(port)


def fetch_parent_cert(host_port: str, timeout: float = FETCH_TIMEOUT) -> bytes:
    """The leaf certificate the parent presents on ``host:port``, as PEM. Raises ParentUnreachable."""
    host, port = split_host_port(host_port)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except socket.timeout:
        raise ParentUnreachable(f"parent {host_port} did not complete a TLS handshake within {timeout:g}s") from None
    except socket.gaierror as exc:
        raise ParentUnreachable(f"parent {host_port}: cannot resolve {host!r} ({exc.strerror})") from None
    except ssl.SSLError as exc:
        raise ParentUnreachable(f"parent {host_port}: TLS handshake failed ({exc.reason or exc})") from None
    except OSError as exc:
        raise ParentUnreachable(f"parent {host_port} unreachable: {exc.strerror or exc}") from None
    if not der:
        raise ParentUnreachable(f"parent {host_port} presented no certificate")
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def pin_parent(cfg: Config, published_ca_pem: bytes, now: float | None = None) -> Path:
    """Fetch the parent's certificate, verify it against ``published_ca_pem`` and write it to the
    trusted parent file (mode 0644); return that path. Raises ParentUnreachable or
    ParentNotVerified (and then writes nothing), or StatesyncError when the write fails."""
    host_port = cfg.guard.parent_host
    leaf = fetch_parent_cert(host_port, min(FETCH_TIMEOUT, cfg.guard.trigger_timeout))
    why = verify_issued_by(leaf, published_ca_pem, time.time() if now is None else now)
    if why:
        raise ParentNotVerified(f"parent {host_port}: {why}")
    path = trusted_parent_file(cfg)
    try:
        write_atomic(path, leaf, mode=0o644)
    except OSError as exc:
        raise StatesyncError(f"cannot write the parent's certificate to {path}: {exc.strerror or exc}") from None
    return path


def pin_at_startup(cfg: Config, store: Store, stop_event: threading.Event) -> None:
    """Before a satellite's first enrolment (no certs/ca.crt yet), pin the parent against the
    published CA, retrying with bounded backoff until it succeeds or ``stop_event`` is set.
    Does nothing without ``guard.parent_host`` or on an enrolled node."""
    if not cfg.guard.parent_host:
        return
    local_ca = cfg.state_dir / LOCAL_CA
    if os.path.lexists(local_ca):
        log.info("node is enrolled; the parent's certificate is not pinned at start-up", ca=str(local_ca))
        return
    backoff, reported = Backoff(BACKOFF_FIRST, BACKOFF_MAX), set()
    while not stop_event.is_set():
        try:
            path = pin_parent(cfg, _published_pem(cfg, store))
        except StatesyncError as exc:
            # A parent that is still starting fails the same way for minutes: say so once per kind.
            kind, pause = type(exc).__name__, backoff.pause()
            if kind not in reported:
                reported.add(kind)
                log.warning("cannot pin the parent's certificate yet; retrying", parent=cfg.guard.parent_host,
                            error=str(exc), retry_in=pause)
            stop_event.wait(pause)
            continue
        log.info("parent's certificate pinned for the enrolment", parent=cfg.guard.parent_host, file=str(path))
        return


class _NoPublishedCA(StatesyncError):
    pass


class _InvalidPublishedCA(StatesyncError):
    pass


def _published_pem(cfg: Config, store: Store) -> bytes:
    pair = store.get(cfg.layout.ca, consistent=True)
    if pair is None:
        raise _NoPublishedCA(f"no CA is published at {cfg.layout.ca}")
    try:
        return cadoc.decode(pair.value).pem
    except CorruptData as exc:
        raise _InvalidPublishedCA(f"the published CA at {cfg.layout.ca} is invalid: {exc}") from None
