"""All registrations judged together: which are rendered, which wait, which are refused, and why.

``accept`` is the one verdict the master's acceptor acts on and ``statesync satellites`` shows.
Each registration is first judged alone (``registration.judge``). Only a registration with
*standing* then takes part in the cross-checks (case twins, parent conflicts, full zones):
one that a pending request proves (same CN, key and fingerprint), or that the active package
accepted with the same key, zone and parent zone (an *incumbent*: Icinga deletes old request
files, and an enrolled satellite must not drop out with them). A registration without standing
can therefore never push another out: it waits for its request, or is refused when a request
for its CN exists with another key (a spoofed key hash). In every conflict an incumbent wins
and the newcomer is refused; among newcomers the old rules hold (all twins refused, a full
zone keeps the first by CN). ``standby_reason`` says whether this master accepts at all.

Pure: no I/O and no clock.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .registration import Accepted, Policy, Registration, Rejection, digest, judge, shown

UNPROVEN = ("no pending request has the registered key and fingerprint (a spoofed key hash, "
            "or a registration older than the request)")


def left_out_reason(check_line: str) -> str:
    """The refusal of a registration left out because Icinga 2's config check failed with it."""
    return f"left out: Icinga 2's config check failed with it: {check_line}"


@dataclass(frozen=True)
class Evidence:
    """What proves a registration: ``proven`` (cn, key sha256, request fingerprint) of every
    well-formed pending request, ``requested`` their CNs, ``active`` what the active package
    accepted, ``left_out`` cn -> (digest, reason) of registrations Icinga's config check failed
    with (tried again once their digest changes)."""

    proven: frozenset[tuple[str, str, str]] = frozenset()
    requested: frozenset[str] = frozenset()
    active: Mapping[str, Accepted] = field(default_factory=dict)
    left_out: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdicts:
    """Every key ends up in exactly one of the three, each sorted: ``accepted`` (to render),
    ``waiting`` (valid alone, no request yet: neither rendered nor refused), ``rejected``."""

    accepted: tuple[Registration, ...]
    rejected: tuple[Rejection, ...]
    waiting: tuple[Registration, ...] = ()


def incumbent(reg: Registration, evidence: Evidence) -> bool:
    """True when the active package accepted ``reg`` as it is now: same key, zone and parent."""
    was = evidence.active.get(reg.cn)
    return was is not None and (was.key_sha256, was.zone, was.parent_zone) == (
        reg.key_sha256, reg.zone, reg.parent_zone)


def _standing(reg: Registration, evidence: Evidence) -> str | None:
    """None when ``reg`` may take part; "" when it waits for its request; else why it is refused."""
    if incumbent(reg, evidence) or (reg.cn, reg.key_sha256, reg.request_sha256) in evidence.proven:
        return None
    was = evidence.active.get(reg.cn)
    if was is not None and was.key_sha256 == reg.key_sha256:
        return (f"zone {shown(reg.zone)} (parent {shown(reg.parent_zone)}) is not the accepted zone "
                f"{shown(was.zone)} (parent {shown(was.parent_zone)}): moving an enrolled satellite "
                f"takes a new certificate request")
    if reg.cn in evidence.requested:
        return UNPROVEN
    return ""


def _fold(name: str) -> str:
    return name.casefold()


# A check returns conflict groups: (the registrations in conflict, the reason each is given).
# ``_resolve`` decides who of a group is refused: the newcomers when an incumbent is in it.
Group = tuple[list[Registration], str]


def _case_twins(attr: str) -> Callable[[list[Registration], set[str]], list[Group]]:
    def check(regs: list[Registration], incumbents: set[str]) -> list[Group]:
        by_fold: dict[str, list[Registration]] = defaultdict(list)
        for r in regs:
            by_fold[_fold(getattr(r, attr))].append(r)
        out = []
        for members in by_fold.values():
            spellings = sorted({getattr(r, attr) for r in members})
            if len(spellings) < 2:
                continue
            kept = {getattr(r, attr) for r in members if r.cn in incumbents}
            losers = [r for r in members if getattr(r, attr) not in kept] if len(kept) == 1 else members
            for r in losers:
                others = [s for s in spellings if s != getattr(r, attr)]
                out.append(([r], f"{attr} {shown(getattr(r, attr))} differs only by case from "
                                 f"{', '.join(shown(o) for o in others)}"))
        return out
    return check


def _nested(regs: list[Registration], incumbents: set[str]) -> list[Group]:
    # unreachable through judge (a parent zone is never a satellite's zone); kept so that
    # loosening judge can never let registrations build a tree of their own
    parents = {_fold(r.parent_zone) for r in regs}
    return [([r], f"zone {shown(r.zone)} is the parent zone of another registration")
            for r in regs if _fold(r.zone) in parents]


def _parent_conflicts(regs: list[Registration], incumbents: set[str]) -> list[Group]:
    by_zone: dict[str, list[Registration]] = defaultdict(list)
    for r in regs:
        by_zone[r.zone].append(r)
    out = []
    for zone, members in by_zone.items():
        parents = sorted({r.parent_zone for r in members})
        if len(parents) < 2:
            continue
        kept = {r.parent_zone for r in members if r.cn in incumbents}
        losers = [r for r in members if r.parent_zone not in kept] if len(kept) == 1 else members
        out += [([r], f"zone {shown(zone)} is registered with conflicting parent zones "
                      f"{', '.join(shown(p) for p in parents)}") for r in losers]
    return out


def _overfull(limit: int) -> Callable[[list[Registration], set[str]], list[Group]]:
    def check(regs: list[Registration], incumbents: set[str]) -> list[Group]:
        by_zone: dict[str, list[Registration]] = defaultdict(list)
        # the accepted members first: a newcomer never takes an enrolled satellite's place
        for r in sorted(regs, key=lambda r: (r.cn not in incumbents, r.cn)):
            by_zone[r.zone].append(r)
        return [([r], f"zone {shown(r.zone)} already has {limit} endpoints "
                      f"({', '.join(shown(k.cn) for k in members[:limit])})")
                for members in by_zone.values() for r in members[limit:]]
    return check


def accept(registrations: dict[str, bytes], policy: Policy, evidence: Evidence) -> Verdicts:
    """Judge every registration (key CN -> stored bytes) alone, set aside those without standing,
    then cross-check the rest, incumbents first."""
    rejected: list[Rejection] = []
    waiting: list[Registration] = []
    kept: list[Registration] = []
    for key in sorted(registrations):
        verdict = judge(key, registrations[key], policy)
        if isinstance(verdict, Rejection):
            rejected.append(verdict)
            continue
        why = _standing(verdict, evidence)
        earlier = evidence.left_out.get(verdict.cn)
        if why is None and earlier is not None and earlier[0] == digest(verdict):
            why = left_out_reason(earlier[1])
        if why is None:
            kept.append(verdict)
        elif why:
            rejected.append(Rejection(key, why))
        else:
            waiting.append(verdict)
    incumbents = {r.cn for r in kept if incumbent(r, evidence)}
    checks = (_case_twins("cn"), _nested, _parent_conflicts, _case_twins("zone"),
              _overfull(policy.max_endpoints_per_zone))
    for check in checks:
        # one registration, one reason; and one refused for a conflict takes no place in a full zone
        reasons = {r.cn: why for members, why in check(kept, incumbents) for r in members}
        rejected += [Rejection(r.cn, reasons[r.cn]) for r in kept if r.cn in reasons]
        kept = [r for r in kept if r.cn not in reasons]
    return Verdicts(accepted=tuple(sorted(kept, key=lambda r: r.cn)),
                    rejected=tuple(sorted(rejected, key=lambda j: (j.key, j.reason))),
                    waiting=tuple(sorted(waiting, key=lambda r: r.cn)))


def standby_reason(has_ca_key: bool, key_path: str) -> str:
    """Why a master's sidecar must neither stage nor sign, "" when it is the one that does.

    The sidecar beside the CA key accepts and signs, as Icinga 2 signs only where ``ca.key``
    is (``RequestCertificateHandler``: a node without it forwards requests to its zone). A
    second master set up by ``node setup`` against the first has no ``ca/`` at all.
    """
    if has_ca_key:
        return ""
    return (f"standing by: no {key_path} on this master, so it accepts and signs no satellite "
            f"(the master holding the CA does; in an HA zone this one learns them by Icinga's config sync)")
