"""A registration that makes Icinga 2's config check fail is left out, so that the rest get in.

When the stage of every accepted registration fails, ``isolate`` looks for the newcomers to blame:
the registrations the active package already runs (the *base*) are kept, the newcomers are tried
oldest first, and a binary search over how many of them to add finds the first one the check fails
with; it is left out and the search goes on with the ones after it. Each try is a validation
without activation (no reload); the caller stages the result once. The number of tries is bounded
(``budget``): what the budget leaves untried waits for the next pass, never blamed.

The registrations left out are kept, with the reason, in a small file beside the state
(``.statesync-enrol-left-out.json`` in the sidecar's root, never part of a snapshot): the
acceptor reads it at start, ``statesync satellites`` shows it. A registration is tried again
once it changes (another ``registration.digest``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from ..disk import ENROL_LEFT_OUT
from ..fsutil import write_atomic
from ..jsonload import loads
from .registration import valid_name

LEFT_OUT_FILE = ENROL_LEFT_OUT
MAX_TRIES = 8
_MAX_FILE = 256 * 1024

T = TypeVar("T")
# validate(registrations) -> (valid, why not: one line)
Validate = Callable[[list], tuple[bool, str]]


@dataclass(frozen=True)
class Isolated:
    """``good``: the newcomers to stage with the base; ``bad``: (newcomer, reason) to leave out;
    ``untried``: newcomers left for the next pass; ``base_ok``: False when the base alone fails
    (nothing a newcomer did: nothing is blamed); ``tries``: validations spent."""

    good: tuple
    bad: tuple
    untried: tuple
    base_ok: bool
    tries: int


def isolate(base: Sequence[T], newcomers: Sequence[T], validate: Validate, failed_why: str,
            budget: int = MAX_TRIES) -> Isolated:
    """Split ``newcomers`` (oldest first) knowing that ``base + newcomers`` failed with ``failed_why``."""
    tries = 0

    def check(items: list) -> tuple[bool, str]:
        nonlocal tries
        tries += 1
        return validate(items)

    base = list(base)
    ok, _ = check(base)
    if not ok:
        return Isolated((), (), tuple(newcomers), False, tries)
    good: list = []
    bad: list = []
    rest = list(newcomers)
    whole_failed: str | None = failed_why  # base + good + rest is known to fail, with this reason
    while rest:
        if whole_failed is None:
            if tries >= budget:
                break
            ok, why = check(base + good + rest)
            if ok:
                good += rest
                rest = []
                break
            whole_failed = why
        # base + good + rest[:lo] validates, base + good + rest[:hi] does not
        lo, hi, why_hi = 0, len(rest), whole_failed
        while hi - lo > 1 and tries < budget:
            mid = (lo + hi) // 2
            ok, why = check(base + good + rest[:mid])
            if ok:
                lo = mid
            else:
                hi, why_hi = mid, why
        if hi - lo > 1:  # out of tries: keep what is known to validate, the rest waits
            good += rest[:lo]
            rest = rest[lo:]
            break
        good += rest[:lo]
        bad.append((rest[hi - 1], why_hi))
        rest = rest[hi:]
        whole_failed = None
    return Isolated(tuple(good), tuple(bad), tuple(rest), True, tries)


def load_left_out(root: Path) -> dict[str, tuple[str, str]]:
    """cn -> (digest, reason) from the file; {} when it is missing or not what ``save_left_out`` writes."""
    try:
        with open(Path(root) / LEFT_OUT_FILE, "rb") as fh:
            doc = loads(fh.read(_MAX_FILE))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {cn: (v[0], v[1]) for cn, v in doc.items()
            if valid_name(cn) and isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v)}


def save_left_out(root: Path, left_out: dict[str, tuple[str, str]]) -> None:
    """Write the file atomically (remove it for none)."""
    path = Path(root) / LEFT_OUT_FILE
    if not left_out:
        path.unlink(missing_ok=True)
        return
    data = json.dumps({cn: list(v) for cn, v in sorted(left_out.items())}, indent=1).encode()
    write_atomic(path, data, 0o644)
