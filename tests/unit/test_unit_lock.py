"""The writer lock's pure rules and its settings (no Consul)."""
from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest

from statesync import config
from statesync.consul.client import Op
from statesync.consul.lock import (
    LockSettings,
    WriterLock,
    describe_holder,
    holder_value,
    renew_interval,
    retry_interval,
    still_valid,
    writer_lock,
)
from statesync.consul.settings import FENCED_VALUE_MAX, TXN_MAX_BODY_DEFAULT, ConsulSettings
from statesync.consul.store import Store
from statesync.consul.store import failed_op as _failed_op
from statesync.errors import ConfigError, LockLost


def test_a_session_is_renewed_three_times_per_ttl():
    assert renew_interval(15.0) == 5.0
    assert renew_interval(1.0) == pytest.approx(1 / 3)


def test_a_failed_renewal_is_retried_within_a_second_and_within_a_tenth_of_the_ttl():
    assert retry_interval(60.0) == 1.0
    assert retry_interval(2.0) == pytest.approx(0.2)


def test_a_session_counts_as_alive_only_until_one_ttl_after_the_start_of_its_last_renewal():
    assert still_valid(renewed_at=100.0, ttl=10.0, now=109.9)
    assert not still_valid(renewed_at=100.0, ttl=10.0, now=110.0)


def test_the_lock_value_names_the_holder_and_reads_back_for_the_log():
    value = holder_value("master1", 4242, datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert describe_holder(value) == "master1 pid 4242 since 2026-01-02T03:04:05+00:00"
    assert describe_holder(b"not json") == "?"


def test_a_lock_without_a_session_gives_no_fence_since_an_empty_check_session_would_pass_on_a_free_lock():
    lock = WriterLock(Store(ConsulSettings()), "p/nodes/n/lock", LockSettings())
    with pytest.raises(LockLost):
        lock.fence
    assert not lock.held


def test_acquire_returns_false_at_once_when_asked_to_stop():
    lock = WriterLock(Store(ConsulSettings()), "p/nodes/n/lock", LockSettings())
    stop = threading.Event()
    stop.set()
    assert lock.acquire(stop) is False


def test_no_lock_is_made_when_it_is_disabled():
    assert writer_lock(LockSettings(enabled=False), Store(ConsulSettings()), "k", "n") is None
    assert writer_lock(LockSettings(), Store(ConsulSettings()), "k", "n") is not None


def test_lock_settings_come_from_the_environment_with_their_defaults():
    cfg = config.load({"node": "n"}, env={})
    assert cfg.lock == LockSettings(enabled=True, ttl=15.0, delay=5.0)
    cfg = config.load({"node": "n"}, env={"STATESYNC_LOCK_TTL": "20", "STATESYNC_LOCK_DELAY": "0",
                                          "STATESYNC_LOCK_ENABLED": "false"})
    assert cfg.lock == LockSettings(enabled=False, ttl=20.0, delay=0.0)


@pytest.mark.parametrize("name,value", [("lock.ttl", 0.5), ("lock.ttl", 86401), ("lock.delay", -1),
                                        ("lock.delay", 61), ("lock.enabled", "maybe")])
def test_out_of_range_lock_settings_are_refused_by_name(name, value):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        config.load({"node": "n", name: value}, env={})


def test_chunks_too_large_for_a_fenced_transaction_are_refused_while_the_lock_is_on():
    with pytest.raises(ConfigError, match="chunk_size"):
        config.load({"node": "n", "chunk_size": FENCED_VALUE_MAX + 1}, env={})
    assert config.load({"node": "n", "chunk_size": FENCED_VALUE_MAX + 1, "lock.enabled": False}, env={})


def test_a_fenced_value_fits_one_transaction_body_once_base64_encoded():
    assert Op("set", "k" * 200, b"x" * FENCED_VALUE_MAX).body_size() < TXN_MAX_BODY_DEFAULT


def test_the_failed_operation_of_a_refused_transaction_is_found_by_its_index():
    ops = [Op("check-session", "lock", session="s"), Op("set", "a", b"1")]
    assert _failed_op(b'{"Errors":[{"OpIndex":0,"What":"failed session check"}]}', ops).verb == "check-session"
    assert _failed_op(b'{"Errors":[{"OpIndex":1,"What":"x"}]}', ops).key == "a"
    assert _failed_op(b"garbage", ops).verb == ""
