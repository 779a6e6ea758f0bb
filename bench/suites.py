"""The benchmarks that run as scripts of their own, as ``bench/run.py`` runs them.

Each suite is a script in bench/ with ``--quick`` (tiny sizes: proves that every figure can be
measured), ``--json PATH`` and a module-level ``markdown(report)`` that renders its section of
docs/BENCH.md from that JSON. ``bench/run.py`` runs each one as a process of its own (a suite
starts its own Consul, Icinga 2 or engine stack, and a crash or a kill stops only that suite),
collects the JSON into its report and, after a full run, rewrites the suite's block in
docs/BENCH.md between ``<!-- bench:NAME:begin -->`` and ``<!-- bench:NAME:end -->``.

The "before" of a suite that compares two versions of statesync is ``--baseline`` (a git ref,
``issue-25`` by default: main when issue 25 closed, before issue 26's work); each suite exports
it with ``git archive`` and runs it beside the working tree in the same run.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_BASELINE = "issue-25"


@dataclass(frozen=True)
class Suite:
    name: str
    module: str
    minutes: int  # what a full run took on the 2-core reference machine, for the plan printed first
    needs: str  # what the suite starts besides Consul: "", "icinga" or "engine"
    full: tuple[str, ...] = ()
    baseline_flag: str = ""  # the script's option naming the "before" ref; "" when it has none


SUITES = (
    Suite("dump-cost", "dump_cost", 12, "", ("--fixtures", "S,L", "--ticks", "3", "--rounds", "2", "--restores", "3"),
          "--baseline"),
    Suite("fleet", "fleet", 13, "", (), "--baseline-ref"),
    Suite("enrol-scale", "enrol_scale", 8, "icinga", (), "--before"),
    Suite("capacity", "capacity", 20, ""),
    Suite("stack-rto", "stack_rto", 12, "engine", ("--layouts", "2.16,2.14")),
    Suite("memfile", "memfile", 17, "", (), "--baseline"),
    Suite("restore-limit", "restore_limit", 4, "", ("--fixtures", "S,L", "--reps", "9", "--profile"), "--baseline"),
)
NAMES = tuple(s.name for s in SUITES)


def export_code(ref: str, into: Path) -> Path:
    """The statesync package of git ref ``ref`` as plain files under ``into`` (``git archive``:
    the repository's worktrees stay as they are), for a suite's "before" run beside this tree."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(BENCH.parent), "archive", ref, "statesync"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def write_report(report: dict, json_path: Path, markdown) -> int:
    """A suite's end: its JSON, the Markdown of its table beside it (``.md``) and on stdout."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    json_path.with_suffix(".md").write_text(md)
    print(md)
    return 0


def by_name(names: list[str]) -> list[Suite]:
    return [s for s in SUITES if s.name in names]


def command(suite: Suite, quick: bool, baseline: str, json_path: Path) -> list[str]:
    args = ["--quick"] if quick else [*suite.full, *([suite.baseline_flag, baseline] if suite.baseline_flag else [])]
    return [sys.executable, str(BENCH / f"{suite.module}.py"), *args, "--json", str(json_path)]


def run(suite: Suite, quick: bool, baseline: str, work: Path, say) -> dict:
    """Run one suite as a process; its JSON, or what went wrong (a suite that fails is a row of
    the report that says so, never the end of the whole run)."""
    json_path, log = work / f"{suite.name}.json", work / f"{suite.name}.log"
    cmd = command(suite, quick, baseline, json_path)
    say(f"== {suite.name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in cmd[1:])}"
        + ("" if quick else f" (about {suite.minutes} min)"))
    started = time.monotonic()
    with log.open("wb") as out:
        # stderr carries the suite's progress lines: they reach the terminal as they come
        rc = subprocess.run(cmd, stdout=out, stderr=None, cwd=BENCH.parent, check=False).returncode
    seconds = round(time.monotonic() - started, 1)
    if rc != 0 or not json_path.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        say(f"== {suite.name}: failed (exit {rc}): " + " | ".join(tail))
        return {"error": f"exit {rc}", "log_tail": tail, "seconds": seconds}
    report = json.loads(json_path.read_text())
    report.setdefault("seconds", seconds)
    return report


def render(suite: Suite, report: dict) -> str:
    if "error" in report:
        return f"The last run of `{suite.name}` failed ({report['error']}): " + " / ".join(report["log_tail"]) + "\n"
    sys.path.insert(0, str(BENCH))
    return importlib.import_module(suite.module).markdown(report)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def update_block(path: Path, name: str, text: str) -> bool:
    """Replace suite ``name``'s block in ``path``; False (and nothing written) when the file
    has no such block: a suite's section and its prose are written by hand, only its table is
    generated."""
    begin, end = markers(name)
    doc = path.read_text()
    head, sep, rest = doc.partition(begin)
    _, sep2, tail = rest.partition(end)
    if not (sep and sep2):
        return False
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")
    return True
