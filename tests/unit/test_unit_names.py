"""How a name is shown: one line of plain text as ``ls -b`` escapes it, and exact-or-escaped JSON."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import pytest

from statesync.snapshot.names import bytes_b64, escape, exact, for_json, one_line


@pytest.mark.parametrize("name,shown", [
    ("certs/node.crt", "certs/node.crt"),
    ("größe ünïcødé.conf", "größe ünïcødé.conf"),
    ("a\nb", "a\\nb"),
    ("tab\there", "tab\\there"),
    ("back\\slash", "back\\\\slash"),
    ("cr\rbell\a", "cr\\rbell\\a"),
    ("esc\x1b[31m", "esc\\033[31m"),
    ("del\x7f", "del\\177"),
    ("nel\x85", "nel\\302\\205"),
    ("rtl\u202eexe.txt", "rtl\\342\\200\\256exe.txt"),
    ("line\u2028sep", "line\\342\\200\\250sep"),
    (os.fsdecode(b"latin1-\xe9.conf"), "latin1-\\351.conf"),
    (os.fsdecode(b"\xff\xfe"), "\\377\\376"),
])
def test_a_name_is_escaped_as_ls_b_escapes_it(name, shown):
    assert escape(name) == shown


def test_an_escaped_name_is_one_printable_line_whatever_bytes_it_had():
    every_byte = os.fsdecode(bytes(b for b in range(1, 256) if b != 0x2F))
    shown = escape(every_byte)
    assert shown.isprintable() and "\n" not in shown
    assert shown.encode("utf-8")  # no byte held as a surrogate survives


def test_the_ls_b_escape_agrees_with_gnu_ls_for_control_bytes_and_bytes_that_are_not_utf8(tmp_path):
    ls = shutil.which("ls")
    names = [b"a\nb", b"t\tx", b"b\\s", b"e\x1bx", b"d\x7f", b"h\xff", b"\xc3\xa9t\xc3\xa9"]
    for raw in names:
        (tmp_path / os.fsdecode(raw)).write_bytes(b"")
    out = subprocess.run([ls, "-b", str(tmp_path)], capture_output=True, env={"LC_ALL": "C.UTF-8"}, check=True)
    assert sorted(out.stdout.decode().splitlines()) == sorted(escape(os.fsdecode(n)) for n in names)


def test_json_gives_a_utf8_name_exactly_and_another_escaped_with_its_bytes_in_base64():
    assert (for_json("a\nb"), bytes_b64("a\nb"), exact("a\nb")) == ("a\nb", None, True)
    raw = b"dir/latin1-\xe9\n.conf"
    name = os.fsdecode(raw)
    assert exact(name) is False
    assert for_json(name) == "dir/latin1-\\351\\n.conf"
    assert base64.b64decode(bytes_b64(name)) == raw
    text = json.dumps({"path": for_json(name), "path_bytes_b64": bytes_b64(name)})
    text.encode("utf-8")  # strict: no lone surrogate in the document
    assert (for_json(None), bytes_b64(None)) == (None, None)


def test_an_error_message_becomes_one_line_keeping_the_backslashes_of_its_own_reprs():
    name = os.fsdecode(b"a\nb\xff")
    message = f"cannot read {name}: denied; path {name!r}"
    assert one_line(message) == "cannot read a\\nb\\377: denied; path 'a\\nb\\udcff'"
    assert one_line("plain message") == "plain message"
