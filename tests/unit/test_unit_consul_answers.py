"""Consul's answers as statesync's errors: "not ready" is a retry, never "absent"."""
from __future__ import annotations

import pytest
from consul import base as consul_base

from statesync.consul.answers import not_ready, translated
from statesync.errors import ConsulUnavailable, StoreError


def _refusal(code: int, body: bytes) -> consul_base.ConsulException:
    exc = consul_base.ConsulException(f"{code} {body.decode()}")
    exc.response = consul_base.Response(code, {}, body, body)
    return exc


# The bodies Consul 1.8.7 answers with HTTP 500 while it cannot serve a consistent read
# (structs.ErrNotReadyForConsistentReads, structs.ErrNoLeader, raft's ErrLeadershipLost, ErrNotLeader).
@pytest.mark.parametrize("body", [b"Not ready to serve consistent reads", b"No cluster leader",
                                  b"leadership lost while committing log", b"node is not the leader"])
def test_a_consul_server_not_ready_for_consistent_reads_is_unavailable_and_says_why(body):
    error = translated(_refusal(500, body), "read", "p/nodes/n1/head", has_token=False)
    assert isinstance(error, ConsulUnavailable)
    assert "not ready for read of 'p/nodes/n1/head'" in str(error) and body.decode() in str(error)


def test_other_server_errors_stay_unavailable_and_client_errors_stay_errors():
    assert isinstance(translated(_refusal(503, b"rate limited"), "read", "k", False), ConsulUnavailable)
    assert not not_ready(b"rate limited")
    error = translated(_refusal(400, b"Missing key"), "read", "k", False)
    assert isinstance(error, StoreError) and not isinstance(error, ConsulUnavailable)
