"""statesync's own JSON nesting bound (statesync/jsonload.py): one answer on every Python.

Before it, each parser of outside JSON leaned on the json module's RecursionError, which comes
about 1,000 levels down on Python 3.11, 10,000 on 3.13 and later still on 3.14. A document
2,000 deep was refused on 3.11 and parsed on 3.13; where the RecursionError was not caught (the
published CA, the lock value, the root lock, a trigger's command in the environment...) it
was a traceback on every Python. These tests run on 3.11 and 3.13 (scripts/test.sh).
"""
from __future__ import annotations

import ast
import json
import re
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.consul import lock
from statesync.consul.answers import txn_errors
from statesync.disk import JOURNAL
from statesync.enrol import isolation, registration, requests
from statesync.errors import CorruptData, StatesyncError, StreamError
from statesync.icinga.api import error_text
from statesync.jsonload import MAX_DEPTH, TooDeep, loads, raw_decode, too_deep
from statesync.parsing_icinga import parse_argv
from statesync.pki import ca_acceptance, cadoc
from statesync.repo.repository import _decode_gc
from statesync.restore import swap
from statesync.restore.rootlock import Holder
from statesync.snapshot.jsonstream import ObjectStream
from statesync.snapshot.keep_rules import decode_pins
from statesync.snapshot.record import decode_record

PACKAGE = Path(__file__).resolve().parents[2] / "statesync"
TOO_DEEP = f"is nested more than {MAX_DEPTH} deep"


def lists(depth: int) -> str:
    return "[" * depth + "]" * depth


def mixed(depth: int) -> str:
    """Objects and arrays in turn, ``depth`` levels, a value at the bottom."""
    levels = range(depth - 1, -1, -1)  # the outermost first
    return "".join('{"k":' if i % 2 else "[" for i in levels) + "1" + "".join("}" if i % 2 else "]" for i in reversed(levels))


# Deeper than the bound by one; parsed by every Python's json (the old refusal came later).
# 2,000: refused by 3.11's json, parsed by 3.13's. 100,000: refused by both, but as a RecursionError.
DEPTHS = [MAX_DEPTH + 1, 2000, 100_000]


# === the bound ==========================================================================

@pytest.mark.parametrize("make", [lists, mixed])
def test_a_document_nested_as_deep_as_the_bound_parses(make):
    assert loads(make(MAX_DEPTH)) == json.loads(make(MAX_DEPTH))
    assert not too_deep(make(MAX_DEPTH))


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("make", [lists, mixed])
def test_a_document_nested_deeper_than_the_bound_is_refused_with_one_message_at_any_depth(make, depth):
    with pytest.raises(TooDeep, match=f"^{TOO_DEEP}$"):
        loads(make(depth))
    with pytest.raises(TooDeep, match=f"^{TOO_DEEP}$"):
        loads(make(depth).encode())


def test_too_deep_is_a_value_error_so_every_caller_that_refuses_bad_json_refuses_it():
    assert issubclass(TooDeep, ValueError)


@pytest.mark.parametrize("text", [
    '["' + "[" * 5000 + '"]',                     # brackets in a string count for nothing
    '["\\"' + "{[" * 5000 + '"]',                 # nor after an escaped quote in it
    '["\\\\", ' + lists(MAX_DEPTH - 1) + "]",     # an escaped backslash ends no string early
    ",".join(["[[1]]"] * 5000).join("[]"),        # many brackets, shallow
])
def test_brackets_in_strings_and_side_by_side_do_not_count_as_depth(text):
    assert loads(text) == json.loads(text)


def test_a_string_still_open_at_the_end_of_the_text_hides_its_brackets():
    assert not too_deep('["abc' + "[" * 5000)
    assert not too_deep('["abc\\' + "[" * 0)
    assert too_deep('["a"' + "," + "[" * MAX_DEPTH)


# JSON values whose strings and keys are full of what the measure must see through.
_TRICKY = st.text(alphabet=st.sampled_from('[]{}"\\/ a\n\u00e4\u5b5b'), max_size=8)
_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | _TRICKY,
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
                       max_leaves=20)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=200, deadline=None)
@given(_VALUES, st.booleans(), st.sampled_from([None, 1]))
def test_the_measure_is_the_real_depth_whatever_the_strings_hold(value, ascii_only, indent):
    """Wrapped to exactly the bound the text passes, one level more it is refused."""
    inner = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    room = MAX_DEPTH - _depth(value)
    at_bound = "[" * room + inner + "]" * room
    assert not too_deep(at_bound) and loads(at_bound) is not None
    assert too_deep("[" + at_bound + "]")


def test_only_the_given_slice_is_measured():
    text = "[1] " + "[" * 5000
    assert too_deep(text) and not too_deep(text, 0, 3) and too_deep(text, 4)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_bytes_are_read_in_the_encoding_json_detects_as_json_loads_reads_them(encoding):
    text = '{"ä": ["[", "' + "\u5b5b" * 100 + '"]}'
    assert loads(text.encode(encoding)) == json.loads(text.encode(encoding)) == json.loads(text)
    with pytest.raises(TooDeep):
        loads(lists(2000).encode(encoding))


@pytest.mark.parametrize("data", [None, 1, memoryview(b"[]")])
def test_what_json_loads_refuses_with_a_type_error_this_refuses_the_same_way(data):
    with pytest.raises(TypeError) as json_error:
        json.loads(data)
    with pytest.raises(TypeError) as error:
        loads(data)
    assert str(error.value) == str(json_error.value)


def test_a_lock_value_that_is_no_text_describes_an_unknown_holder():
    assert lock.describe_holder(None) == "?"


def test_keyword_arguments_go_to_json():
    assert loads('{"a": 1.5}', parse_float=str) == {"a": "1.5"}


def test_raw_decode_measures_the_value_and_never_the_text_after_it():
    assert raw_decode("[1] " + "[" * 5000, 0) == ([1], 3)
    with pytest.raises(TooDeep):
        raw_decode("x" + lists(2000) + " 1", 1)


def test_raw_decode_refuses_a_deep_value_whose_text_has_not_all_arrived():
    # 3.11's json raised RecursionError here, 3.13's JSONDecodeError ("wait for more"): one answer now
    with pytest.raises(TooDeep):
        raw_decode("[" * 2000, 0)
    with pytest.raises(json.JSONDecodeError):
        raw_decode("[" * 10, 0)


# === every parser of outside JSON uses it ===============================================

def _json_parses(path: Path) -> list[str]:
    """Each place in ``path`` that reaches json's parser: json.loads, json.load, the decoder."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "json" \
                and node.attr in ("loads", "load", "JSONDecoder", "decoder", "scanner"):
            found.append(f"{path.name}:{node.lineno} json.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "json":
            found.append(f"{path.name}:{node.lineno} from {node.module} import")
    return found


def test_no_module_but_jsonload_parses_json_itself():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "jsonload.py" for hit in _json_parses(path)]
    assert found == []


def test_the_check_sees_each_way_to_reach_the_parser(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import json\nfrom json import decoder\nv = json.loads(b)\nd = json.JSONDecoder()\n"
                   "w = json.dumps(v)\n")
    assert sorted(_json_parses(bad)) == ["x.py:2 from json import", "x.py:3 json.loads", "x.py:4 json.JSONDecoder"]


def _deep_gc(text: str) -> object:
    return _decode_gc(zlib.compress(text.encode()))


def _stream(text: str) -> None:
    stream = ObjectStream("e", lambda item: None, lambda key, value: None, max_value=1 << 20)
    for i in range(0, len(text), 4096):
        stream.feed(text[i:i + 4096])
    stream.close()


# (what, parse, the refusal it gives a deep document): the same refusal at every depth past the
# bound, on every Python. Old code: on 3.11 a RecursionError out of all but the registration,
# the record, the pins, the request file and the left-out file; on 3.13 the 2,000 deep
# document parsed and met another check (or none).
SITES = [
    ("registration", lambda t: registration.decode(t.encode()), CorruptData, f"registration {TOO_DEEP}"),
    ("snapshot record", lambda t: decode_record(t.encode()), CorruptData, "snapshot record is malformed (TooDeep)"),
    ("pins", lambda t: decode_pins(t.encode()), CorruptData, "the pins document is malformed"),
    ("published CA", lambda t: cadoc.decode(t.encode()), CorruptData, "published CA document is not JSON"),
    ("CA acceptance", lambda t: ca_acceptance.decode_acceptance(t.encode()), CorruptData,
     "CA acceptance record is not JSON"),
    ("manifest stream", lambda t: _stream('{"v":1,"e":[' + t + "]}"), StreamError, TOO_DEEP),
    ("manifest stream, other member", lambda t: _stream('{"x":' + t + ',"e":[]}'), StreamError, TOO_DEEP),
    ("trigger command", lambda t: parse_argv(t), ValueError, "not a valid JSON array of strings"),
    ("root lock holder", lambda t: Holder.decode(t.encode()), ValueError, TOO_DEEP),
]
# Parsers that answer a fixed fallback for anything unreadable.
FALLBACKS = [
    ("CA history", lambda t: ca_acceptance.decode_history(t.encode()), []),
    ("writer lock holder", lambda t: lock.describe_holder(t.encode()), "?"),
    ("garbage collector state", _deep_gc, {}),
]


# Small enough for every parser's size bound (a registration: 4 KiB), which comes first.
SMALL = [lists(MAX_DEPTH + 1), mixed(MAX_DEPTH + 1), lists(2000)]


@pytest.mark.parametrize("text", SMALL, ids=["lists-101", "mixed-101", "lists-2000"])
@pytest.mark.parametrize("what, parse, error, message", SITES, ids=[s[0] for s in SITES])
def test_each_parser_of_outside_json_refuses_a_deep_document_the_same_way_at_any_depth(what, parse, error, message,
                                                                                      text):
    with pytest.raises(error, match=re.escape(message)):
        parse(text)


@pytest.mark.parametrize("text", SMALL, ids=["lists-101", "mixed-101", "lists-2000"])
@pytest.mark.parametrize("what, parse, fallback", FALLBACKS, ids=[s[0] for s in FALLBACKS])
def test_each_lenient_parser_reads_a_deep_document_as_unreadable(what, parse, fallback, text):
    assert parse(text) == fallback


@pytest.mark.parametrize("depth", DEPTHS)
def test_icinga_and_consul_error_answers_nested_deep_are_reported_as_text(depth):
    assert error_text(lists(depth).encode()).startswith("[[[")
    assert txn_errors(lists(depth).encode())[0].startswith("[[[")


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_deep_request_file_and_left_out_file_are_refused_as_too_deep(tmp_path, depth):
    (tmp_path / ("a" * 64 + ".json")).write_text('{"cert_request": ' + lists(depth) + "}")
    [found] = requests.scan(tmp_path)
    assert found.request is None and found.error == f"file {TOO_DEEP}"
    (tmp_path / isolation.LEFT_OUT_FILE).write_text(lists(depth))
    assert isolation.load_left_out(tmp_path) == {}


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_deep_restore_journal_is_reported_unreadable(tmp_path, depth):
    (tmp_path / JOURNAL).write_text(lists(depth))
    with pytest.raises(StatesyncError, match="is unreadable; inspect"):
        swap.recover(tmp_path)
