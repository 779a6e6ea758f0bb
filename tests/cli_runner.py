"""The statesync CLI run inside the test process: ``statesync.cli.main.main(argv)`` with its
environment, working directory, stdout and stderr its own for the call.

For usage, configuration-error and exit-code tests: an interpreter spawn costs 0.5-1 s on a
loaded 2-core machine, a call here a few milliseconds. What it cannot see is the process itself
(an import that fails, a traceback printed on the way out, a signal): the tests named
``..._no_traceback_escapes_the_process`` keep spawning ``python -m statesync`` for that.
A command that starts a daemon, holds a lock or needs a signal handler belongs in a subprocess.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

import structlog

from statesync.cli.main import main

from .support import clean_env


class _Stream(io.TextIOWrapper):
    """A text stream over bytes, as sys.stdout is: a command that writes to ``.buffer`` works."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="surrogateescape", newline="", write_through=True)

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", "surrogateescape")


@contextlib.contextmanager
def _environment(env: Mapping[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
            stdin: str = "") -> subprocess.CompletedProcess:
    """Run ``statesync *args`` in this process; the result reads like subprocess.run's with
    ``capture_output=True, text=True``. ``env`` replaces the whole environment for the call
    (default: :func:`tests.support.clean_env`, so no CONSUL_* or STATESYNC_* of the runner's leaks
    in). An exception escaping ``main`` is a bug the real process would show as a traceback: it
    is not raised but reported as exit code 1 with the traceback in stderr, so a test asserting
    "one line, no traceback" fails on it with the evidence in view."""
    out, err = _Stream(), _Stream()
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_logging = structlog.get_config()
    saved_cwd = os.getcwd()
    code: int
    with _environment(clean_env() if env is None else env):
        try:
            if cwd is not None:
                os.chdir(Path(cwd))
            sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse: usage errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, int | None):
                    print(exc.code, file=sys.stderr)
            except Exception:  # the escaped traceback is the finding; pytest's own exits pass
                traceback.print_exc(file=err)
                code = 1
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved_streams
            os.chdir(saved_cwd)
            structlog.reset_defaults()
            structlog.configure(**saved_logging)
    return subprocess.CompletedProcess(["statesync", *args], code, out.text(), err.text())
