"""docs/ARCHITECTURE.md stays true: its package table names every module on disk and none that is
gone, and "Where new work goes" covers each kind of change a contributor makes.

How the document is read (so that a row can keep its prose): in a package row's second column a
module is a backticked lower-case name outside parentheses (`daemon` (watch, ...)); backticked
text inside parentheses (a command, a key, a function) is prose. The base modules are the
backticked `*.py` names of the paragraph that starts "The base, importable from anywhere".
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ARCHITECTURE.md"
PACKAGE = REPO / "statesync"

_ROW = re.compile(r"^\|\s*`(?P<pkg>[a-z_]+)/`\s*\|(?P<what>.*?)\|.*\|\s*$")
_MODULE = re.compile(r"`([a-z_][a-z0-9_]*)`")
_BASE_START = "The base, importable from anywhere"


def _outside_parentheses(text: str) -> str:
    """The text with every parenthesised part, nested ones included, taken out."""
    kept, depth = [], 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(depth - 1, 0)
        elif depth == 0:
            kept.append(ch)
    return "".join(kept)


def documented_packages(doc: str) -> dict[str, set[str]]:
    """Each package row of the table and the modules its second column names."""
    rows: dict[str, set[str]] = {}
    for line in doc.splitlines():
        m = _ROW.match(line)
        if m:
            rows[m["pkg"]] = set(_MODULE.findall(_outside_parentheses(m["what"])))
    return rows


def documented_base(doc: str) -> set[str]:
    """The base modules the paragraph after the table names, without `.py`."""
    start = doc.index(_BASE_START)
    end = doc.find("\n\n", start)
    return set(re.findall(r"`([a-z_][a-z0-9_]*)\.py`", doc[start:end if end != -1 else None]))


def packages_on_disk() -> dict[str, set[str]]:
    return {d.name: {p.stem for p in d.glob("*.py") if not p.name.startswith("__")}
            for d in sorted(PACKAGE.iterdir()) if (d / "__init__.py").is_file()}


def base_on_disk() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if not p.name.startswith("__")}


def differences(doc: str) -> list[str]:
    """Every mismatch between the document and the disk, in both directions, one line each."""
    problems = []
    documented, on_disk = documented_packages(doc), packages_on_disk()
    for pkg in sorted(on_disk.keys() - documented.keys()):
        problems.append(f"package statesync/{pkg}/ has no row in the table")
    for pkg in sorted(documented.keys() - on_disk.keys()):
        problems.append(f"the table has a row for `{pkg}/`, which is not a package under statesync/")
    for pkg in sorted(documented.keys() & on_disk.keys()):
        for name in sorted(on_disk[pkg] - documented[pkg]):
            problems.append(f"statesync/{pkg}/{name}.py is missing from the `{pkg}/` row")
        for name in sorted(documented[pkg] - on_disk[pkg]):
            problems.append(f"the `{pkg}/` row names `{name}`, but statesync/{pkg}/{name}.py does not exist")
    base_doc, base_disk = documented_base(doc), base_on_disk()
    for name in sorted(base_disk - base_doc):
        problems.append(f"statesync/{name}.py is missing from the base modules paragraph")
    for name in sorted(base_doc - base_disk):
        problems.append(f"the base modules paragraph names `{name}.py`, which does not exist")
    return problems


def test_the_module_table_names_every_module_on_disk_and_no_other():
    problems = differences(DOC.read_text())
    assert not problems, ("docs/ARCHITECTURE.md and statesync/ disagree (a module is a backticked name "
                          "outside parentheses in its package's row):\n  " + "\n  ".join(problems))


def test_the_check_sees_a_module_left_out_and_one_that_is_gone():
    doc = DOC.read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `repo/` |"))
    assert "`rekey`," in row
    problems = differences(doc.replace(row, row.replace("`rekey`,", "`vanished` (a module no more),")))
    assert "statesync/repo/rekey.py is missing from the `repo/` row" in problems
    assert "the `repo/` row names `vanished`, but statesync/repo/vanished.py does not exist" in problems


def test_backticked_prose_inside_parentheses_is_not_read_as_a_module():
    rows = documented_packages("| `guard/` | `publish` (master's CA at `<prefix>/ca`, see `accept`), "
                               "`logic` (pure (really: `nothing`)) | repo |\n")
    assert rows == {"guard": {"publish", "logic"}}


def _where_new_work_goes(doc: str) -> str:
    start = doc.index("## Where new work goes")
    end = doc.find("\n## ", start + 1)
    return doc[start:end if end != -1 else None]


def test_where_new_work_goes_covers_each_kind_of_change():
    section = _where_new_work_goes(DOC.read_text())
    entries = re.findall(r"^- \*\*(.+?)\*\*", section, flags=re.MULTILINE)
    for kind in ("A new command", "A new setting", "A new trigger", "A new retention rule",
                 "A new Consul call", "A new key in Consul", "A new enrolment check", "A new Icinga file"):
        assert any(e.rstrip(":").startswith(kind) for e in entries), f"no entry for {kind!r} in {entries}"
