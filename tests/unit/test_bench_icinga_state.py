"""The Icinga 2 state generator of the benchmarks (bench/icinga_state.py), on its tiny fixture:
deterministic, framed as Icinga 2 frames its dumps, a tick rewrites nearly every byte but no
object, and the result compresses like a real state file."""
from __future__ import annotations

import json
import os
import stat
import sys
import zlib
from pathlib import Path

import pytest

from ..support import REPO

sys.path.insert(0, str(REPO / "bench"))
import icinga_state  # noqa: E402

HOSTS, SERVICES = icinga_state.FIXTURES["tiny"]


def _dump(seed: int = 1, tick: int = 0) -> bytes:
    return b"".join(icinga_state.frame(r) for r in icinga_state.records(HOSTS, SERVICES, seed, tick))


def _netstrings(data: bytes) -> list[bytes]:
    """An independent reader of ``<len>:<payload>,`` (lib/base/netstring.cpp)."""
    out, pos = [], 0
    while pos < len(data):
        colon = data.index(b":", pos)
        digits = data[pos:colon]
        assert digits.isdigit() and len(digits) <= 9 and not (len(digits) > 1 and digits.startswith(b"0")), digits
        end = colon + 1 + int(digits)
        assert data[end:end + 1] == b",", f"no ',' after the netstring at {pos}"
        out.append(data[colon + 1:end])
        pos = end + 1
    return out


@pytest.fixture(scope="module")
def ticks() -> tuple[bytes, bytes]:
    return _dump(tick=0), _dump(tick=1)


def test_the_generator_is_deterministic_for_a_seed(ticks):
    assert _dump(tick=0) == ticks[0]
    assert _dump(tick=1) == ticks[1]
    assert _dump(seed=2, tick=0) != ticks[0]


def test_every_frame_is_a_netstring_of_a_json_object_as_dump_objects_writes_it(ticks):
    payloads = _netstrings(ticks[0])
    assert len(payloads) == len(list(icinga_state.parse(ticks[0])))
    types = {}
    for payload in payloads:
        doc = json.loads(payload)
        assert list(doc) == ["name", "type", "update"]  # Icinga's Dictionary: sorted keys
        assert doc["update"]["type"] == doc["type"]  # SerializeObject appends the type
        types[doc["type"]] = types.get(doc["type"], 0) + 1
        if doc["type"] in ("Host", "Service"):
            cr = doc["update"]["last_check_result"]
            assert cr["type"] == "CheckResult" and cr["output"] and isinstance(cr["performance_data"], list)
            assert cr["execution_start"] <= cr["execution_end"] <= cr["schedule_end"]
            assert doc["update"]["next_check"] > cr["schedule_start"]
    assert types["Host"] == HOSTS and types["Service"] == HOSTS * SERVICES
    # integral doubles as integers (JsonEncoder::EncodeNumber): no "0.0" anywhere
    assert b":0.0," not in ticks[0] and b":0.0}" not in ticks[0]


def test_a_tick_rewrites_nearly_every_byte_but_keeps_objects_names_and_fields(ticks):
    a = [json.loads(p) for p in _netstrings(ticks[0])]
    b = [json.loads(p) for p in _netstrings(ticks[1])]
    assert [(r["type"], r["name"]) for r in a] == [(r["type"], r["name"]) for r in b]
    assert all(set(x["update"]) == set(y["update"]) for x, y in zip(a, b, strict=True))
    frames_a, frames_b = _netstrings(ticks[0]), _netstrings(ticks[1])
    changed = sum(len(y) for x, y in zip(frames_a, frames_b, strict=True) if x != y)
    assert changed / sum(len(y) for y in frames_b) > 0.97


def test_the_tiny_fixture_compresses_like_a_state_file(ticks):
    assert len(ticks[0]) / len(zlib.compress(ticks[0], 6)) > 8


def test_dump_replaces_the_file_as_icinga_does_leaving_no_temp_file(tmp_path: Path):
    path = tmp_path / icinga_state.STATE_FILE
    path.write_bytes(b"old")
    stats = icinga_state.dump(path, HOSTS, SERVICES, seed=1, tick=0)
    assert stats["tmp"].startswith("icinga2.state.tmp.") and len(stats["tmp"]) == len("icinga2.state.tmp.") + 6
    assert path.read_bytes() == _dump(tick=0) and stats["bytes"] == path.stat().st_size
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == [icinga_state.STATE_FILE]
