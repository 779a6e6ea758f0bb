"""The suites that bench/run.py runs as scripts of their own (bench/suites.py): each one has the
interface run.py relies on, and each has its block in docs/BENCH.md for a full run to rewrite."""
from __future__ import annotations

import ast
import sys

import pytest

from ..support import REPO

sys.path.insert(0, str(REPO / "bench"))
import suites  # noqa: E402


@pytest.mark.parametrize("suite", suites.SUITES, ids=lambda s: s.name)
def test_every_suite_is_a_script_with_quick_json_and_markdown(suite):
    tree = ast.parse((REPO / "bench" / f"{suite.module}.py").read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {"main", "markdown"} <= functions
    options = {a.value for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument"
               for a in n.args if isinstance(a, ast.Constant)}
    assert {"--quick", "--json"} <= options
    assert not suite.baseline_flag or suite.baseline_flag in options


@pytest.mark.parametrize("suite", suites.SUITES, ids=lambda s: s.name)
def test_every_suite_has_exactly_one_block_in_bench_md(suite):
    doc = (REPO / "docs/BENCH.md").read_text()
    begin, end = suites.markers(suite.name)
    assert doc.count(begin) == 1 and doc.count(end) == 1 and doc.index(begin) < doc.index(end)


def test_a_quick_command_never_carries_the_full_sizes_or_the_baseline(tmp_path):
    suite = suites.by_name(["dump-cost"])[0]
    quick = suites.command(suite, True, "v1", tmp_path / "x.json")
    full = suites.command(suite, False, "v1", tmp_path / "x.json")
    assert quick[2:] == ["--quick", "--json", str(tmp_path / "x.json")]
    assert full[-4:] == ["--baseline", "v1", "--json", str(tmp_path / "x.json")] and "S,L" in full


def test_updating_a_block_replaces_only_what_lies_between_its_markers(tmp_path):
    doc = tmp_path / "BENCH.md"
    begin, end = suites.markers("fleet")
    other_begin, other_end = suites.markers("dump-cost")
    doc.write_text(f"prose\n{begin}\nold table\n{end}\nmore prose\n{other_begin}\nkept\n{other_end}\n")
    assert suites.update_block(doc, "fleet", "| new | table |\n")
    assert doc.read_text() == (f"prose\n{begin}\n| new | table |\n{end}\nmore prose\n"
                               f"{other_begin}\nkept\n{other_end}\n")


def test_a_doc_without_the_suites_block_is_left_as_it_was(tmp_path):
    doc = tmp_path / "BENCH.md"
    begin, _ = suites.markers("fleet")
    doc.write_text(f"prose\n{begin}\nno end marker\n")
    assert not suites.update_block(doc, "fleet", "| new |")
    assert doc.read_text() == f"prose\n{begin}\nno end marker\n"


def test_a_failed_suite_renders_as_a_line_that_says_so():
    suite = suites.by_name(["fleet"])[0]
    text = suites.render(suite, {"error": "exit 2", "log_tail": ["no consul binary"], "seconds": 0.1})
    assert "failed (exit 2)" in text and "no consul binary" in text
