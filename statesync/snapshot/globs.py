"""Include/exclude patterns over root-relative POSIX paths. Pure.

Patterns are anchored at the root. ``*`` and ``?`` stay inside one path
component, ``**`` spans any number of components, ``[...]`` is a character class.
A pattern ending in ``/`` or ``/**`` matches a directory and everything below it.
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


@dataclass(frozen=True)
class PathFilter:
    """Decides which root-relative paths belong in a snapshot."""

    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Compiled once: a scan asks about every path of the tree.
        object.__setattr__(self, "_include", tuple(compile_pattern(p) for p in self.include))
        object.__setattr__(self, "_exclude", tuple(compile_pattern(p) for p in self.exclude))

    def excluded(self, path: str, ancestors: bool = True) -> bool:
        """Return True when ``path`` (or, with ``ancestors``, a directory above it) is excluded.

        A tree walk that never descends into excluded directories passes ``ancestors=False``.
        """
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
        if self.excluded(path):
            return False
        return any(r.match(path) for r in self._include)

    def wanted(self, path: str, is_dir: bool, ancestors: bool = True) -> bool:
        """Directories are kept unless excluded (they hold included files);
        files and links must also match an include pattern."""
        if self.excluded(path, ancestors):
            return False
        return is_dir or any(r.match(path) for r in self._include)
