"""The pending certificate requests Icinga 2 keeps on the master, and answering them.

A satellite enrolled without a ticket sends its self-signed certificate at every retry (every
10 s); the master stores it as ``certificate-requests/<sha256 of its DER>.json``, a JSON
object ``{"cert_request": PEM, "ticket": ...}``. ``icinga2 ca sign`` does nothing but add
``"cert_response": PEM`` to that file, and the master hands it out at the satellite's next
retry. These files are written by a process the sidecar does not trust to be well-formed
(a satellite chooses their contents), so every file is read with a size limit, without
following symlinks, and a bad one is reported, never raised.
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptData
from ..fsutil import write_atomic
from ..jsonload import TooDeep, loads
from ..pki.fingerprint import spki_sha256
from ..pki.signing import RequestCert, parse_request

MAX_BYTES = 256 * 1024
_NAME = re.compile(r"[0-9a-f]{64}\.json")


@dataclass(frozen=True)
class PendingRequest:
    """One request file. ``request`` is set exactly when ``error`` is empty: a file with an
    error is never to be signed, only reported."""
    path: Path
    fingerprint: str
    doc: dict = field(repr=False)
    request: RequestCert | None
    error: str
    response_pem: bytes | None
    mtime: float


class _Skip(Exception):
    """Not a request file at all (a symlink, a directory, gone): left out silently."""


def scan(directory: Path) -> list[PendingRequest]:
    """Every ``<sha256>.json`` regular file in ``directory``, sorted by name; [] when the
    directory does not exist. A file that cannot be read comes back with its error; OSError is
    raised only when the directory cannot be listed."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in sorted(names):
        if _NAME.fullmatch(name):
            path = Path(directory) / name
            try:
                out.append(_load(path)[0])
            except _Skip:
                pass
            except OSError as exc:
                out.append(PendingRequest(path, name[:-len(".json")], {}, None,
                                          f"cannot read the file: {exc.strerror or exc}", None, 0.0))
            except Exception as exc:  # a file a satellite shaped is refused alone, never the whole pass
                out.append(PendingRequest(path, name[:-len(".json")], {}, None,
                                          f"cannot parse the file ({type(exc).__name__})", None, 0.0))
    return out


def write_response(path: Path, fingerprint: str, pem: bytes) -> bool:
    """Set ``cert_response`` in the request file ``path`` to ``pem``, keeping every other field,
    the file's owner and mode. False, with nothing written, when the file no longer holds the
    request ``fingerprint`` (Icinga rewrote it, or it is gone); True when the file holds the
    response afterwards. Raises CorruptData when ``pem`` is no certificate for that request's
    key, OSError when reading or writing fails."""
    path = Path(path)
    try:
        pending, owner = _load(path)
    except _Skip:
        return False
    if pending.error or pending.request is None or pending.fingerprint != fingerprint:
        return False
    if spki_sha256(pem) != pending.request.spki_sha256:
        raise CorruptData(f"response for {pending.request.cn} is not a certificate for the request's key")
    text = pem.decode("ascii")
    if pending.doc.get("cert_response") == text:
        return True
    doc = dict(pending.doc, cert_response=text)
    # Icinga writes its JSON files compact, keys sorted (its dictionaries are ordered maps).
    data = json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    uid, gid, mode = owner
    write_atomic(path, data, mode, owner=(uid, gid), hidden=True)
    return True


def _load(path: Path) -> tuple[PendingRequest, tuple[int, int, int]]:
    """The request file at ``path`` and its (uid, gid, mode); raise _Skip when it is no regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _Skip() from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise _Skip() from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Skip()
        data = _read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    owner = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    fp = path.name[:-len(".json")]

    def bad(why: str, doc: dict | None = None) -> tuple[PendingRequest, tuple[int, int, int]]:
        return PendingRequest(path, fp, doc or {}, None, why, None, st.st_mtime), owner

    if len(data) > MAX_BYTES:
        return bad(f"file is larger than {MAX_BYTES // 1024} KiB")
    try:
        doc = loads(data.decode("utf-8"))
    except TooDeep as exc:
        return bad(f"file {exc}")
    except (UnicodeDecodeError, ValueError):
        return bad("file is not JSON")
    if not isinstance(doc, dict):
        return bad("file is not a JSON object")
    pem = doc.get("cert_request")
    if not isinstance(pem, str):
        return bad("cert_request is missing or not a string", doc)
    response = doc.get("cert_response")
    if response is not None and not isinstance(response, str):
        return bad("cert_response is not a string", doc)
    try:
        request = parse_request(pem.encode("utf-8", "replace"))
    except CorruptData as exc:
        return bad(str(exc), doc)
    if request.fingerprint != fp:
        return bad("file name is not the request's fingerprint", doc)
    return PendingRequest(path, fp, doc, request, "", response.encode() if response else None, st.st_mtime), owner


def _read(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

