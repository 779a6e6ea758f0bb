"""How a path of a snapshot is shown: escaped in plain text, exact or escaped-plus-bytes in JSON.

A manifest path is a ``str`` holding a name's bytes: valid UTF-8 as characters, any other
byte as a lone surrogate (Python's ``surrogateescape``, as ``os.fsdecode`` gives it). Printed
raw, a name with a newline forges a line of output; dumped to JSON, a lone surrogate is not
Unicode, and strict parsers (jq) replace it. Pure: no I/O.
"""
from __future__ import annotations

import base64

# GNU's escape quoting style (ls -b): C's escapes, a backslash doubled, \ooo for the rest.
_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r"}


def _octal(data: bytes) -> str:
    return "".join(f"\\{b:03o}" for b in data)


def escape(name: str) -> str:
    """``name`` as one line of plain text, as ``ls -b`` writes it: ``\\n``, ``\\t`` and C's
    other escapes, a backslash doubled, and ``\\ooo`` for each byte of a character Unicode
    does not call printable (control and format characters, such as the right-to-left
    override) and for each byte that is not UTF-8. Unlike ``ls -b``, a space stays a space.
    A name that needs none of this comes back unchanged."""
    return _escaped(name, "\\")


def one_line(message: str) -> str:
    """An error message as one line: escaped as ``escape`` escapes a name, except that a backslash
    stays (a message's own ``repr`` of a value has its backslashes already)."""
    return _escaped(message, "")


def _escaped(text: str, backslash: str) -> str:
    if text.isprintable() and not (backslash and backslash in text):
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append(ch + backslash)
        elif ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8, as surrogateescape holds it
            out.append(_octal(bytes([ord(ch) - 0xDC00])))
        elif not ch.isprintable():
            out.append(_octal(ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def exact(name: str) -> bool:
    """True when ``name`` is valid UTF-8 (no byte held as a surrogate): JSON can carry it as it is."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def for_json(name: str | None) -> str | None:
    """The JSON string of a name: the name itself when it is valid UTF-8, else ``escape(name)``."""
    return name if name is None or exact(name) else escape(name)


def bytes_b64(name: str | None) -> str | None:
    """The name's bytes in base64 when ``for_json`` could not give it exactly; None otherwise."""
    if name is None or exact(name):
        return None
    try:
        data = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no file name decodes to: only a crafted manifest holds one
        data = name.encode("utf-8", "surrogatepass")
    return base64.b64encode(data).decode("ascii")
