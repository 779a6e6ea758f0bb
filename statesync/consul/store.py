"""What the rest of statesync sees of Consul: keys, transactions and sessions, with its own errors.

Every call goes through the library's endpoints (``client``); every failure, whether the
library's exception or the transport's, leaves this module as one of statesync's exceptions
(ConsulUnavailable, PermissionDenied naming the key prefix and whether read or write,
CasConflict, LockLost, LockHeld, StoreError), never as a ``False``.

Reads are ``consistent`` unless a caller asks otherwise (docs/ARCHITECTURE.md, "Read
consistency"): a Consul server that has just become leader, after a restart or an election,
answers default reads from a state that is still replaying its raft log, so the newest keys
(a node's head always among them) read as absent or old for a while. Every statesync decision
(restore which snapshot, "nothing to restore", "the prefix is empty", what retention and GC
delete) rests on such reads; a consistent read is refused (HTTP 500, "Not ready to serve
consistent reads", "No cluster leader") until the leader has caught up, and that refusal is
ConsulUnavailable, which every caller retries or fails on, never taken for "absent".
"""
from __future__ import annotations

import binascii
import time
from contextlib import contextmanager
from typing import Iterable, NamedTuple

import structlog

from ..errors import CasConflict, ConsulUnavailable, Ended, LockHeld, LockLost, Refused, StatesyncError, StoreError
from .answers import (
    denied,
    failed_op,  # noqa: F401  (named here by callers of the store)
    raise_if_bad_ttl,
    refused_txn,
    translated,
    txn_errors,
)
from .backoff import Backoff
from .client import Client, Op
from .library import consul_base
from .settings import FENCED_VALUE_MAX, PUT_THRESHOLD, READ_BATCH_BYTES, ConsulSettings
from .transport import Stats, brief

log = structlog.get_logger(__name__)


class KVPair(NamedTuple):
    key: str
    value: bytes
    modify_index: int
    session: str = ""


class Store:
    """A Consul KV client for statesync. Thread-safe for concurrent callers."""

    def __init__(self, settings: ConsulSettings):
        self.settings = settings
        self.stats = Stats()
        self.consul = Client(settings, self.stats)

    # -- errors ------------------------------------------------------------------------

    @contextmanager
    def _speaking(self, what: str, key: str):
        """Turn what the library raises for ``what`` (read, write, ...) of ``key`` into our errors."""
        try:
            yield
        except StatesyncError:
            raise
        except consul_base.ConsulException as exc:
            error = translated(exc, what, key, bool(self.settings.token))
            if not isinstance(error, (Refused, Ended)):  # answers the caller expects, not failures
                self.stats.errors += 1
            raise error from None
        except (ValueError, KeyError, TypeError, IndexError):
            self.stats.errors += 1
            raise StoreError(f"Consul answered {what} of {key!r} with something that is not its API's JSON") from None

    # -- key/value ---------------------------------------------------------------------

    def ping(self) -> str:
        """Return the current raft leader address; raise ConsulUnavailable without one."""
        with self._speaking("read", "status/leader"):
            leader = self.consul.status.leader()
        if not leader or not isinstance(leader, str):
            raise ConsulUnavailable("Consul has no cluster leader")
        return leader

    def get(self, key: str, consistent: bool = True) -> KVPair | None:
        """Return the pair at ``key`` or None when it does not exist.

        ``consistent=False`` is for a reader that only notices (the guard's first look, which
        it confirms consistently before acting): it may see a value that is no longer, or not
        yet, the newest."""
        with self._speaking("read", key):
            _, item = self.consul.kv.get(key, consistency=_mode(consistent))
            return _pair(item) if item else None

    def wait(self, key: str, index: int, wait_s: float) -> tuple[int, KVPair | None]:
        """Blocking query: return ``(index, pair)`` once ``key`` changes past ``index`` or the wait ends."""
        with self._speaking("read", key):
            new_index, item = self.consul.kv.get(key, index=index, wait=f"{max(1, int(wait_s))}s")
            return int(new_index or index), (_pair(item) if item else None)

    def get_prefix(self, prefix: str, consistent: bool = True) -> list[KVPair]:
        """Return every pair below ``prefix`` in one recursive read."""
        with self._speaking("read", prefix):
            _, items = self.consul.kv.get(prefix, recurse=True, consistency=_mode(consistent))
            if items is None:
                return self._empty_or_denied(prefix)
            return [_pair(item) for item in items]

    def wait_prefix(self, prefix: str, index: int, wait_s: float) -> tuple[int, list[KVPair]]:
        """Blocking recursive read: ``(index, pairs)`` once anything below ``prefix`` changes past
        ``index`` or the wait ends (a deleted key moves the index too)."""
        with self._speaking("read", prefix):
            new_index, items = self.consul.kv.get(prefix, recurse=True, index=index, wait=f"{max(1, int(wait_s))}s")
            if items is None:
                return int(new_index or index), self._empty_or_denied(prefix)
            return int(new_index or index), [_pair(item) for item in items]

    def keys(self, prefix: str, consistent: bool = True) -> list[str]:
        """Return the key names below ``prefix``."""
        with self._speaking("read", prefix):
            _, names = self.consul.kv.get(prefix, keys=True, consistency=_mode(consistent))
            return self._empty_or_denied(prefix) if names is None else list(names)

    def get_many(self, keys: Iterable[tuple[str, int]]) -> dict[str, bytes]:
        """Read keys by name, given as ``(key, expected value size)``; return the values of those that exist.

        The keys go in transactions of ``get`` operations, each holding at most
        ``txn_max_ops`` keys and about ``READ_BATCH_BYTES`` of expected values, so that no
        answer grows with what else the prefix holds and each stays well inside the request
        timeout. Consul refuses a batch that names a missing key as a whole; its keys are
        then read one by one.

        Consistent, although chunks are named by their content and verified against it, so that
        no stale read can hand back wrong bytes: a leader that is still replaying its log reads a
        chunk written just before the head as absent, and that would be reported as a missing
        chunk, damage, where there is none. One leadership check per batch (about 4 MiB) costs
        little beside the batch itself.
        """
        found: dict[str, bytes] = {}
        for batch in _read_batches(keys, self.settings.txn_max_ops, READ_BATCH_BYTES):
            try:
                pairs = self.txn([Op("get", k) for k in batch], consistent=True)
            except CasConflict:
                pairs = [p for k in batch if (p := self.get(k)) is not None]
            found.update((p.key, p.value) for p in pairs)
        return found

    def _empty_or_denied(self, prefix: str) -> list:
        """A listing answered 404: nothing there, or every key hidden by the token's ACL.

        Consul filters what a token may not read out of a listing instead of answering
        403, so read the prefix itself as one key: there a missing permission is a 403.
        """
        self.consul.kv.get(prefix, consistency="consistent")
        return []

    def put(self, key: str, value: bytes, cas: int | None = None, fence: tuple[Op, ...] = ()) -> None:
        """Write ``value``; with ``cas`` only if the key's ModifyIndex still equals it (0: absent).

        With ``fence`` the write goes as a transaction opened by those operations.
        Raises CasConflict when the check-and-set lost, LockLost when a fence failed.
        """
        if fence:
            self.txn([*fence, Op("set" if cas is None else "cas", key, value, index=cas)])
            return
        with self._speaking("write", key):
            done = self.consul.kv.put(key, value, cas=cas)
        self.stats.kv_writes += 1
        if done is not True:
            raise CasConflict(f"check-and-set on {key!r} lost: it changed since index {cas}")

    def delete(self, key: str) -> None:
        with self._speaking("delete", key):
            self.consul.kv.delete(key)
        self.stats.kv_writes += 1

    def txn(self, ops: list[Op], consistent: bool = True) -> list[KVPair]:
        """Apply ``ops`` atomically; return the pairs the operations returned.

        ``consistent``: for a transaction of reads only (Consul serves those without raft, in
        the consistency mode asked for; a transaction that writes goes through raft anyway).
        On by default like every other read here: retention and the record catalog decide
        from read-only transactions.
        Raises CasConflict when a cas/check operation failed, LockLost when a
        ``check-session`` fence failed (in both cases nothing was applied).
        """
        with self._speaking("transaction", ops[0].key if ops else ""):
            try:
                answer = self.consul.txn.apply(ops, consistency=_mode(consistent))
            except consul_base.ClientError as exc:
                refused = refused_txn(getattr(exc, "response", None), ops, bool(self.settings.token))
                if refused is None:
                    raise
                raise refused from None
            pairs = [_pair(r["KV"], encoded=True) for r in answer.get("Results") or [] if r.get("KV")]
        self.stats.kv_writes += sum(1 for op in ops if op.verb in ("set", "cas", "delete", "delete-cas", "delete-tree"))
        return pairs

    def put_many(self, items: Iterable[tuple[str, bytes]], fence: tuple[Op, ...] = ()) -> int:
        """Write many pairs: small values in filled transactions, large ones by plain PUT.

        ``fence`` operations (for example ``check-session``) open every transaction.
        Returns the number of values written. Not atomic as a whole.
        """
        written = 0
        batch: list[Op] = []
        size = sum(op.body_size() for op in fence)
        max_ops = self.settings.txn_max_ops - len(fence)
        for key, value in items:
            if len(value) > PUT_THRESHOLD and not fence:
                self.put(key, value)
                written += 1
                continue
            check_fenced_size(key, value)
            op = Op("set", key, value)
            if batch and (len(batch) >= max_ops or size + op.body_size() > self.settings.txn_max_body):
                self.txn([*fence, *batch])
                written += len(batch)
                batch, size = [], sum(f.body_size() for f in fence)
            batch.append(op)
            size += op.body_size()
        if batch:
            self.txn([*fence, *batch])
            written += len(batch)
        return written

    def delete_many(self, keys: Iterable[str], fence: tuple[Op, ...] = ()) -> int:
        """Delete many keys in transactions; return how many."""
        keys = list(keys)
        step = self.settings.txn_max_ops - len(fence)
        for i in range(0, len(keys), step):
            self.txn([*fence, *(Op("delete", k) for k in keys[i:i + step])])
        return len(keys)

    # -- sessions and locks ------------------------------------------------------------

    def session_create(self, name: str, ttl: float, lock_delay: float) -> str:
        """Create a session that only its TTL keeps alive; return its id.

        No node health check is attached: the session must outlive the Consul server it
        was created on (a cluster losing its leader) and end only when its holder stops
        renewing it. Keys it holds are released, not deleted, when it ends, and Consul
        then refuses to lock them for ``lock_delay`` seconds. Consul itself ends a session
        between ``ttl`` and twice ``ttl`` after its last renewal.
        Raises StoreError (a TTL the servers refuse), PermissionDenied or ConsulUnavailable.
        """
        try:
            with self._speaking("session creation", "session"):
                session = self.consul.session.create(name, ttl, lock_delay, behavior="release", checks=())
        except ConsulUnavailable as exc:
            raise_if_bad_ttl(str(exc), ttl)
            raise
        if not session:
            raise StoreError("Consul answered a session creation without a session id")
        return str(session)

    def session_renew(self, session: str) -> None:
        """Reset the TTL of ``session``.

        Raises LockLost when the session has ended, ConsulUnavailable (also while a new
        leader cannot yet tell), PermissionDenied or StoreError.
        """
        try:
            with self._speaking("session renewal", "session"):
                self.consul.session.renew(session)
        except Ended:
            # A server elected a moment ago may not have replayed its log yet and answer 404 for
            # a live session; a consistent read, refused until it has, tells for sure.
            if self._session_exists(session):
                raise ConsulUnavailable(f"Consul's new leader does not know session {session} yet") from None
            raise LockLost(f"session {session} has ended (expired or destroyed)") from None

    def _session_exists(self, session: str) -> bool:
        with self._speaking("session lookup", "session"):
            _, info = self.consul.session.info(session, consistency="consistent")
        return bool(info)

    def session_destroy(self, session: str) -> None:
        """End ``session`` (ending one that has already ended is no error).

        Locks it still holds are released and Consul's lock-delay starts on them.
        """
        with self._speaking("session destruction", "session"):
            self.consul.session.destroy(session)

    def lock_acquire(self, key: str, session: str, value: bytes) -> None:
        """Lock ``key`` for ``session`` and set its value; locking it again with its holder is fine.

        Raises LockHeld when another session holds the key or Consul's lock-delay after
        the last holder is running, LockLost when ``session`` has ended, PermissionDenied,
        ConsulUnavailable or StoreError otherwise.
        """
        refused = self._lock_op("lock", key, session, value)
        if refused is not None:
            what = "; ".join(txn_errors(refused))
            if "invalid session" in what.lower():
                raise LockLost(f"session {session} has ended: {what[:200]}")
            raise LockHeld(f"lock {key!r} is taken: {what[:200]}")
        self.stats.kv_writes += 1

    def lock_release(self, key: str, session: str) -> None:
        """Unlock ``key`` if ``session`` holds it (no lock-delay follows an explicit release).

        Releasing a lock the session does not hold (any more) changes nothing and is no error.
        Raises PermissionDenied, ConsulUnavailable or StoreError.
        """
        if self._lock_op("unlock", key, session, None) is None:
            self.stats.kv_writes += 1

    def _lock_op(self, verb: str, key: str, session: str, value: bytes | None) -> bytes | None:
        """Send a lock or unlock; return Consul's answer when it refused it (409), else None.

        As a transaction, a refused lock is a 409 naming the reason; the plain ?acquire=
        form answers an ended session with a 500, which looks transient.
        """
        try:
            with self._speaking(verb, key):
                self.consul.txn.apply([Op(verb, key, value, session=session)])
        except Refused as refused:
            if "permission denied" in brief(refused.content, 1000).lower():
                raise denied(verb, key, refused.content, bool(self.settings.token)) from None
            return refused.content
        return None


def _mode(consistent: bool) -> str | None:
    """The library's consistency argument: None leaves Consul's default mode."""
    return "consistent" if consistent else None


def _read_batches(keys: Iterable[tuple[str, int]], max_ops: int, max_bytes: int) -> Iterable[list[str]]:
    batch: list[str] = []
    size = 0
    for key, expected in keys:
        if batch and (len(batch) >= max_ops or size + expected > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(key)
        size += expected
    if batch:
        yield batch


def check_fenced_size(key: str, value: bytes) -> None:
    if len(value) > FENCED_VALUE_MAX:
        raise StoreError(f"value of {key!r} ({len(value)} bytes) is too large for a fenced transaction; "
                         f"lower chunk_size to at most {FENCED_VALUE_MAX}")


def _pair(item: dict, encoded: bool = False) -> KVPair:
    """A pair from Consul's JSON; ``encoded``: the value is still base64 (transaction results,
    which the library does not decode as it does a KV read's)."""
    value = item.get("Value") or b""
    if encoded and value:
        value = binascii.a2b_base64(value)
    return KVPair(item["Key"], value, int(item.get("ModifyIndex", 0)), item.get("Session") or "")


def retry(fn, attempts: int = 5, base: float = 0.2, cap: float = 5.0, sleep=time.sleep):
    """Call ``fn`` until it succeeds, retrying ConsulUnavailable with capped exponential backoff.

    Each failed attempt is logged at once, at warning, with its cause and the next delay: a
    sidecar waiting for Consul at start is otherwise silent for the whole backoff (23 s at 8
    attempts), which reads as a hang."""
    def announce(exc: BaseException, attempt: int, delay: float) -> None:
        log.warning("Consul unavailable; retrying", error=str(exc), attempt=f"{attempt}/{attempts}",
                    retry_in=round(delay, 2))
    return Backoff(base, cap, attempts=attempts).call(fn, ConsulUnavailable, sleep=sleep, announce=announce)
