"""The project's exception types and the one table that maps them to exit codes.

Every failure that reaches the command line is a ``StatesyncError``: its message is
the single line the user sees, so it must never carry a token or key material.
"""
from __future__ import annotations

import os

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# `statesync run --role satellite` with guard.trigger = "exit": the CA guard has moved the
# node's certificates into quarantine and asks the orchestrator to restart Icinga 2 (whose
# entrypoint then enrols again) and the sidecar. Never used for any other outcome.
EXIT_RESTART = 3
# Commands that compare (``diff``, ``restore --dry-run``) follow diff(1): 0 the same, 1
# different, 2 trouble. A script reads 1 as "different", so none of their failures may exit 1.
EXIT_SAME = 0
EXIT_DIFFERENT = 1
EXIT_TROUBLE = 2
# Those commands, as ``exit_code_for`` is told them: the name, "--dry-run" appended for a dry run.
COMPARING = frozenset({"diff", "restore --dry-run"})


class StatesyncError(Exception):
    """A failure with a message fit for one line on stderr."""

    exit_code = EXIT_FAILURE


class ConfigError(StatesyncError):
    """A setting is missing or invalid; the message names the setting."""

    exit_code = EXIT_USAGE


class ConfigErrors(ConfigError):
    """Several settings are wrong: ``lines`` holds one message for each, naming where its value came from."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)

class UsageError(StatesyncError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = EXIT_USAGE


class StoreError(StatesyncError):
    """Consul answered with an error that retrying will not fix."""


class ConsulUnavailable(StoreError):
    """Consul could not be reached, or answered with a transient server error."""


class ConsulRefused(ConsulUnavailable):
    """Consul closed a new connection unanswered: this client address holds more than
    ``limits.http_max_conns_per_client`` connections. Unlike Consul being away, it lasts until
    the fleet behind the address shrinks or the limit is raised."""


class PermissionDenied(StoreError):
    """Consul refused the request for lack of an ACL permission."""


class CasConflict(StoreError):
    """A check-and-set lost: somebody else changed the key first."""


class LockHeld(StoreError):
    """Another session holds the writer lock, or Consul's lock-delay after the last holder is still running."""


class LockLost(StoreError):
    """This process no longer holds the writer lock: its session ended, or a fenced write was refused."""


class Refused(StoreError):
    """A 409 to a lock operation: the caller decides what it means. Never leaves ``consul/``:
    the store turns it into LockHeld or LockLost."""

    def __init__(self, content: bytes):
        super().__init__("refused")
        self.content = content


class Ended(StoreError):
    """A 404 to a session renewal: the session is unknown to the server that answered. Never
    leaves ``consul/``: the store turns it into LockLost."""


class MissingChunks(StoreError):
    """The manifest names chunks that are neither known to be stored nor freshly read."""

class NotFound(StatesyncError):
    """The snapshot, node or key asked for does not exist."""


class CorruptData(StatesyncError):
    """Stored data failed verification: wrong checksum, bad encoding, bad manifest."""


class SuspiciousDrop(StatesyncError):
    """The tree shrank by more than ``max_drop`` since the last snapshot: not committed without an operator."""


class UnreadablePath(StatesyncError):
    """A file or directory below the root cannot be read (permissions, I/O error). ``path`` is
    relative to the root (absolute when outside it); the message is ``cannot read PATH: REASON``."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path = path
        self.reason = reason

    @classmethod
    def from_os_error(cls, exc: OSError, root) -> "UnreadablePath":
        """The error for an OSError raised while reading below ``root`` (its filename, if any, names the path)."""
        name = os.fsdecode(exc.filename) if exc.filename is not None else os.fspath(root)
        base = os.fspath(root).rstrip("/") + "/"
        path = name[len(base):] if name.startswith(base) else name
        return cls(path or name, exc.strerror or str(exc))


class UnsafePath(CorruptData):
    """A manifest path would escape the root (``..``, absolute, or through a symlink)."""


class TriggerError(StatesyncError):
    """A restart trigger of the CA guard could not be fired (API, signal, Docker or command)."""


class ParentUnreachable(StatesyncError):
    """The parent's API port did not complete a TLS handshake."""


class ParentNotVerified(StatesyncError):
    """The parent presents a certificate the published CA did not issue (or no valid one)."""

class IcingaApiError(StatesyncError):
    """Icinga 2's REST API refused, failed or could not be reached; the message names the call
    (never the password)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class IcingaUnreachable(IcingaApiError):
    """No HTTP answer at all: refused, reset, timed out. Expected for a few seconds while Icinga
    reloads; a TLS failure is an IcingaTlsError, never this. ``sent`` is False when the
    connection failed before the request left, so sending it again is safe."""

    def __init__(self, message: str, sent: bool, cause: str = ""):
        super().__init__(message)
        self.sent = sent
        self.cause = cause


class IcingaTlsError(IcingaApiError):
    """The CA file could not be loaded, or the server's certificate or the handshake failed."""

class EnrolError(StatesyncError):
    """A satellite cannot be enrolled through Consul (no published CA, no request yet, a
    certificate of another CA); the message says what is missing."""


class EncryptionKeyError(StatesyncError):
    """The encryption key needed is missing, or is not the one the data was sealed with."""


class PlaintextSecret(EncryptionKeyError):
    """A secret file (a private key, constants.conf with the TicketSalt, API passwords) was about
    to go to Consul unencrypted, which needs the explicit opt-out ``allow_plaintext_secrets``;
    nothing of it was uploaded."""

    def __init__(self, path: str):
        super().__init__(f"{path} is a secret (a private key, the TicketSalt or passwords) and no encryption key is configured: create one with "
                         f"\"statesync keygen --out FILE\" and set encryption_key_file, or pass "
                         f"--allow-plaintext-secrets")
        self.path = path


class RestoreRefused(StatesyncError):
    """The target root is not in a state that restore may write to."""


class CaConflict(StatesyncError):
    """The root holds a CA other than the published one (or, with none published, the one in the
    node's latest snapshot), and no operator accepted it."""

class RootMissing(StatesyncError):
    """A named root (setting roots) is missing or no directory where a snapshot would be taken:
    nothing is committed (a snapshot without the CA's subtree would pass for the node's state)."""


class RootBusy(StatesyncError):
    """Another statesync process holds the root's lock; the message names it. Exit 1, not a
    code of its own: the command was valid, and retrying once the holder has gone succeeds."""


# Parse failures of pure parsers, ValueErrors and no StatesyncError: the caller knows what was
# being read and turns them into one (ConfigError naming the setting, CorruptData naming the key).

class Invalid(ValueError):
    """A setting's value does not parse; the message says what was expected (``parsing``)."""


class StreamError(ValueError):
    """The text is no JSON object of the expected shape, or one value of it is too large."""


class KeyFormatError(ValueError):
    """The text is not a statesync key."""


def exit_code_for(exc: BaseException, command: str = "") -> int:
    """Return the process exit code for ``exc``: 2 for usage/config, 1 otherwise; for a
    ``command`` in COMPARING, EXIT_TROUBLE whatever the failure."""
    if command in COMPARING:
        return EXIT_TROUBLE
    if isinstance(exc, StatesyncError):
        return exc.exit_code
    return EXIT_FAILURE
