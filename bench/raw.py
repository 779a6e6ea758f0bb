"""The raw limits the benchmark compares statesync with: the same bytes moved to and from
Consul as fast as a Python client on one keep-alive connection can move them.

Deliberately not statesync code: ``http.client`` directly (about 0.18 ms a request on
this machine, against 0.9 ms for ``requests``), no hashing, no manifest, no checks,
transaction bodies built by plain byte concatenation (a base64 value never needs JSON
escaping), values above the PUT threshold sent by plain PUT.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
from pathlib import Path

# The same limits statesync uses (Consul: 64 operations and 512 KiB a transaction).
TXN_MAX_OPS = 64
TXN_MAX_BODY = 480 * 1024
PUT_THRESHOLD = 96 * 1024


class RawConsul:
    """One keep-alive HTTP/1.1 connection to a Consul agent on loopback."""

    def __init__(self, addr: str, timeout: float = 120.0):
        host, _, port = addr.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        self.requests = 0

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> bytes:
        self.conn.request(method, path, body=body, headers=headers or {})
        resp = self.conn.getresponse()
        data = resp.read()
        self.requests += 1
        if resp.status != 200:
            raise RuntimeError(f"{method} {path} answered {resp.status}: {data[:200]!r}")
        return data

    def delete_tree(self, prefix: str) -> None:
        self.call("DELETE", f"/v1/kv/{prefix}?recurse")

    def close(self) -> None:
        self.conn.close()


def _txn_body(batch: list[tuple[str, bytes]]) -> bytes:
    return b"[" + b",".join(b'{"KV":{"Verb":"set","Key":' + json.dumps(k).encode() + b',"Value":"'
                             + base64.b64encode(v) + b'"}}' for k, v in batch) + b"]"


def upload(raw: RawConsul, items: list[tuple[str, bytes]]) -> int:
    """Write ``items`` (key, value): small values in transactions filled to the operation
    and byte limits, large ones by plain PUT. Returns the number of requests sent."""
    before = raw.requests
    batch: list[tuple[str, bytes]] = []
    size = 0
    for key, value in items:
        if len(value) > PUT_THRESHOLD:
            raw.call("PUT", f"/v1/kv/{key}", body=value)
            continue
        op = 4 * ((len(value) + 2) // 3) + len(key) + 96
        if batch and (len(batch) >= TXN_MAX_OPS or size + op > TXN_MAX_BODY):
            raw.call("PUT", "/v1/txn", body=_txn_body(batch))
            batch, size = [], 0
        batch.append((key, value))
        size += op
    if batch:
        raw.call("PUT", "/v1/txn", body=_txn_body(batch))
    return raw.requests - before


def download(raw: RawConsul, prefix: str) -> dict[str, bytes]:
    """One recursive GET without gzip; return every value below ``prefix`` by key."""
    body = raw.call("GET", f"/v1/kv/{prefix}?recurse", headers={"Accept-Encoding": "identity"})
    b64 = binascii.a2b_base64
    return {p["Key"]: b64(p["Value"]) if p.get("Value") else b"" for p in json.loads(body)}


def write_files(target: Path, files: list[tuple[str, list[str]]], values: dict[str, bytes], chunk_key) -> int:
    """Write each (relative path, chunk digests) from ``values`` under ``target``; return bytes written."""
    made: set[str] = set()
    total = 0
    for rel, digests in files:
        parent = os.path.dirname(rel)
        if parent and parent not in made:
            os.makedirs(target / parent, exist_ok=True)
            made.add(parent)
        data = b"".join(values[chunk_key(d)] for d in digests)
        with open(target / rel, "wb") as fh:
            fh.write(data)
        total += len(data)
    return total
