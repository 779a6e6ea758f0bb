#!/usr/bin/env python3
"""Print the configuration reference table of README.md from schema.SCHEMA.

README.md carries this table between the markers below; tests/unit/test_readme.py checks
that it is current. Regenerate with: .venv/bin/python scripts/config_reference.py --write
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from statesync.schema import SCHEMA  # noqa: E402

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


# Settings whose None default means something other than "the host name".
_NONE = {"role": "(none: required by run)"}


def _default(value, name: str = "") -> str:
    if value is None:
        return _NONE.get(name, "(host name)")
    if isinstance(value, (tuple, list)):
        return ", ".join(f"`{v}`" for v in value) or "(none)"
    if value == "":
        return "(unset)"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def table() -> str:
    rows = ["| setting (TOML) | environment | default |", "|---|---|---|"]
    for s in SCHEMA:
        env = ", ".join(f"`{e}`" for e in s.env)
        default = "(never shown)" if s.secret else _default(s.default, s.name)
        rows.append(f"| `{s.name}` | {env} | {default} |")
    return "\n".join(rows)


def block() -> str:
    return f"{BEGIN}\n{table()}\n{END}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = README.read_text()
        start, end = text.index(BEGIN), text.index(END) + len(END)
        README.write_text(text[:start] + block() + text[end:])
    else:
        print(block())
