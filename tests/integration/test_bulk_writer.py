"""store.BulkWriter against the real Consul: filled transactions go while the caller is
still producing, the partial last one is left to the caller, and failures surface."""
from __future__ import annotations

import pytest

from statesync import config
from statesync.consul.bulk import BulkWriter
from statesync.consul.client import Op
from statesync.consul.settings import PUT_THRESHOLD
from statesync.consul.store import Store
from statesync.errors import ConsulUnavailable, StoreError

from ..support import free_ports

pytestmark = pytest.mark.consul


def _store(addr: str) -> Store:
    return Store(config.load({"prefix": "x", "node": "n", "consul.addr": [addr]}, env={}).consul)


def test_full_transactions_and_large_values_are_sent_and_the_rest_is_left_to_the_caller(consul, prefix):
    store = _store(consul.addr)
    small = {f"{prefix}/small/{i:03d}": bytes([i % 256]) * 100 for i in range(200)}
    large = {f"{prefix}/large": b"L" * (PUT_THRESHOLD + 1)}
    with BulkWriter(store) as writer:
        for key, value in [*small.items(), *large.items()]:
            writer.add(key, value)
    max_ops = store.settings.txn_max_ops
    assert len(writer.sent) == (200 // max_ops) * max_ops + 1
    assert set(large) <= writer.sent
    stored = {p.key: p.value for p in store.get_prefix(f"{prefix}/")}
    assert {k: v for k, v in stored.items()} == {k: v for k, v in {**small, **large}.items() if k in writer.sent}
    assert not set(small) - writer.sent - {k for k in small if k not in stored}


def test_every_transaction_opens_with_the_fence(consul, prefix):
    store = _store(consul.addr)
    store.put(f"{prefix}/guard", b"1")
    index = store.get(f"{prefix}/guard").modify_index
    fence = (Op("check-index", f"{prefix}/guard", index=index),)
    with BulkWriter(store, fence) as writer:
        for i in range(store.settings.txn_max_ops * 2):
            writer.add(f"{prefix}/fenced/{i:03d}", b"v")
    assert len(writer.sent) == 2 * (store.settings.txn_max_ops - 1)
    store.put(f"{prefix}/guard", b"2")  # the fence fails from now on
    with pytest.raises(StoreError):
        with BulkWriter(store, fence) as writer:
            for i in range(store.settings.txn_max_ops * 3):
                writer.add(f"{prefix}/late/{i:03d}", b"v")
    assert store.keys(f"{prefix}/late/") == []


def test_an_unreachable_consul_is_raised_to_the_producer():
    store = _store(f"127.0.0.1:{free_ports(1)[0]}")
    with pytest.raises(ConsulUnavailable):
        with BulkWriter(store) as writer:
            for i in range(1000):
                writer.add(f"x/{i}", b"v" * 1000)
