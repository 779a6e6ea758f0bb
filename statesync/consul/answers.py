"""How Consul's answers become statesync's errors: one place for every status, refusal and message
the store and the lock tell apart. No I/O."""
from __future__ import annotations

from ..errors import (
    CasConflict,
    ConsulUnavailable,
    Ended,
    LockLost,
    PermissionDenied,
    Refused,
    StatesyncError,
    StoreError,
)
from ..jsonload import loads
from .client import Op
from .library import consul_base
from .transport import brief

# What a Consul server answers (HTTP 500) while it cannot serve a consistent read yet: no leader
# elected, a leader whose state has not caught up with its log, or one that lost its leadership
# while checking it (raft's ErrNotLeader, ErrLeadershipLost). All pass by themselves.
NOT_READY = (b"not ready to serve consistent reads", b"no cluster leader", b"leadership lost",
             b"node is not the leader")


def not_ready(content: bytes) -> bool:
    """True when Consul's answer says it cannot serve a consistent read yet (retry), not that anything is absent."""
    low = (content or b"").lower()
    return any(marker in low for marker in NOT_READY)


def translated(exc: consul_base.ConsulException, what: str, key: str, has_token: bool) -> StatesyncError:
    response = getattr(exc, "response", None)
    if response is None:
        return StoreError(f"Consul refused {what} of {key!r}")
    code, content = response.code, response.content
    if code >= 500 and not_ready(content):
        return ConsulUnavailable(f"Consul is not ready for {what} of {key!r} yet (no leader elected, or a leader "
                                 f"still replaying its log after a restart): {brief(content)}")
    if code == 404 and what == "session renewal":
        return Ended(key)
    if code == 409 and what in ("lock", "unlock"):
        return Refused(content)
    if code == 403:
        return denied(what, key, content, has_token)
    if code == 413:
        return StoreError("transaction too large for Consul (lower txn_max_ops or check txn_max_req_len)")
    if code >= 500:
        return ConsulUnavailable(f"Consul answered {code} to {what} of {key!r}: {brief(content)}")
    return StoreError(f"Consul answered {code} to {what} of {key!r}: {brief(content)}")


def refused_txn(response, ops: list[Op], has_token: bool) -> StatesyncError | None:
    """Our error for a transaction Consul refused with a 409 (nothing applied); None for other answers."""
    if response is None or response.code != 409:
        return None
    errors = txn_errors(response.content)
    joined = "; ".join(errors)[:300]
    # Decided by the failing operation, not the message: a missing key reads alike for both.
    if failed_op(response.content, ops).verb == "check-session":
        return LockLost(f"a fenced write was refused, the writer lock is gone: {joined}")
    if any(is_conflict(e) for e in errors):
        return CasConflict(f"transaction lost a check-and-set: {joined}")
    if any("permission denied" in e.lower() for e in errors):
        key = failed_op(response.content, ops).key or (ops[0].key if ops else "")
        return denied("write", key, response.content, has_token)
    return StoreError(f"transaction rejected: {joined}")


SESSION_OPS = {"session creation": "create", "session renewal": "renew", "session lookup": "read",
               "session destruction": "destroy"}


def denied(what: str, key: str, content: bytes, has_token: bool) -> PermissionDenied:
    """Which of Consul's three refusals a denied ``what`` of ``key`` is, in one line.

    Consul 1.8 answers an unknown token "ACL not found" and a token without the right
    (or no token at all, under default deny) "Permission denied": only whether a token
    was sent tells the last two apart, and their remedies differ.
    """
    subject = what if what in SESSION_OPS else f"{what} of {key!r}"
    if b"acl not found" in content.lower():
        return PermissionDenied(f"Consul refused {subject}: Consul does not know the ACL token (deleted, expired, "
                                "or from another cluster); check consul.token_file (CONSUL_HTTP_TOKEN_FILE)")
    if not has_token:
        return PermissionDenied(f"Consul refused {subject}: no ACL token configured "
                                "(set consul.token_file / CONSUL_HTTP_TOKEN_FILE)")
    if what in SESSION_OPS:
        need = "read" if what == "session lookup" else "write"
        return PermissionDenied(f"permission denied: the token may not {SESSION_OPS[what]} a session "
                                f"(it lacks session {need} on the agent's node)")
    op = what if what in ("read", "write", "delete", "lock", "unlock") else "write"
    need = "read" if op == "read" else "write"
    return PermissionDenied(f"permission denied: the token may not {op} {key!r} (it lacks {need} permission on that key)")


def txn_errors(content: bytes) -> list[str]:
    try:
        return [str(e.get("What", "")) for e in loads(content).get("Errors") or []]
    except (ValueError, AttributeError):
        return [brief(content)]


def failed_op(content: bytes, ops: list[Op]) -> Op:
    """The operation a 409 answer names as failed; a blank Op when the answer names none."""
    try:
        return ops[int(loads(content)["Errors"][0]["OpIndex"])]
    except (ValueError, KeyError, IndexError, TypeError):
        return Op("", "")


def is_conflict(what: str) -> bool:
    w = what.lower()
    return ("cas" in w or "index" in w or "doesn't exist" in w or "not exist" in w
            or "already exists" in w or "session" in w) and "permission" not in w


def raise_if_bad_ttl(text: str, ttl: float) -> None:
    # Consul answers a TTL outside its session_ttl_min..24h with a 500; retrying cannot help.
    if "Invalid Session TTL" in text:
        raise StoreError(f"lock.ttl: Consul refuses a session TTL of {ttl:g}s ({text[:200]}); "
                         "raise lock.ttl or lower the servers' session_ttl_min") from None
