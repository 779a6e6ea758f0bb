"""Include/exclude patterns over root-relative POSIX paths. Pure.

Patterns are anchored at the root. ``*`` and ``?`` stay inside one path
component, ``**`` spans any number of components, ``[...]`` is a character class.
A pattern ending in ``/`` or ``/**`` matches a directory and everything below it.

A ``scope`` (the named subtrees of the setting ``roots``) narrows the tree to those
subtrees and their ancestor directories; nothing else is ever wanted, or walked into.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
                i += 1
                continue
            body = pattern[i + 1:end].replace("\\", "\\\\")
            if body == "!":
                raise ValueError("empty negated character class")
            if body.startswith("!"):
                body = "^/" + body[1:]  # like * and ?, a class never matches across a /
            out.append(f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one pattern; raises ValueError when it is empty or absolute."""
    if not pattern or pattern.startswith("/"):
        raise ValueError("patterns are relative to the root and not empty")
    subtree = pattern.endswith("/") or pattern.endswith("/**")
    base = pattern.rstrip("/")
    if base.endswith("/**"):
        base = base[:-3]
    regex = _translate(base)
    if subtree:
        regex += "(?:/.*)?"
    try:
        return re.compile(f"^{regex}\\Z", re.DOTALL)
    except re.error as exc:
        raise ValueError(f"invalid pattern: {exc}") from None


def rebase(base: str, patterns: tuple[str, ...]) -> tuple[str, ...]:
    """``patterns`` written relative to the subtree ``base``, made relative to the root; ``**/``
    patterns already match at any depth, and ``base`` "" leaves them all as they are."""
    if not base:
        return tuple(patterns)
    return tuple(p if p.startswith("**/") else f"{base}/{p}" for p in patterns)


def in_scope(scope: tuple[str, ...], path: str) -> bool:
    """True when ``path`` lies at or below one of ``scope`` or is an ancestor of one; an empty
    scope is the whole tree."""
    return not scope or any(path == s or path.startswith(s + "/") or s.startswith(path + "/") for s in scope)


def ancestor_only(scope: tuple[str, ...], path: str) -> bool:
    """True when ``path`` is in scope only as a directory above a subtree of ``scope``."""
    return bool(scope) and not any(path == s or path.startswith(s + "/") for s in scope)


@dataclass(frozen=True)
class PathFilter:
    """Decides which root-relative paths belong in a snapshot."""

    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    # root-relative subtrees; () is the whole root
    scope: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Compiled once: a scan asks about every path of the tree.
        object.__setattr__(self, "_include", tuple(compile_pattern(p) for p in self.include))
        object.__setattr__(self, "_exclude", tuple(compile_pattern(p) for p in self.exclude))

    def excluded(self, path: str, ancestors: bool = True) -> bool:
        """Return True when ``path`` (or, with ``ancestors``, a directory above it) is excluded.

        A tree walk that never descends into excluded directories passes ``ancestors=False``.
        Paths out of ``scope`` are excluded.
        """
        if not in_scope(self.scope, path):
            return True
        if not ancestors:
            return any(r.match(path) for r in self._exclude)
        parts = path.split("/")
        for n in range(1, len(parts) + 1):
            prefix = "/".join(parts[:n])
            if any(r.match(prefix) for r in self._exclude):
                return True
        return False

    def included(self, path: str) -> bool:
        """Return True when ``path`` matches an include pattern and no exclude."""
        if self.excluded(path) or ancestor_only(self.scope, path):
            return False
        return any(r.match(path) for r in self._include)

    def wanted(self, path: str, is_dir: bool, ancestors: bool = True) -> bool:
        """Directories are kept unless excluded (they hold included files);
        files and links must also match an include pattern."""
        if self.excluded(path, ancestors):
            return False
        if ancestor_only(self.scope, path):
            return is_dir  # recorded for its mode and owner, never for what else it holds
        return is_dir or any(r.match(path) for r in self._include)
