"""Progress of a command that moves files (backup, restore, verify): a live bar on a terminal,
one summary line at the end either way.

The bar is tqdm's (bytes with rate and ETA, files alongside); elsewhere (a pipe, a log file, a
container's output) nothing is drawn, since a redrawn line there is only noise, and the
summary is the one line the command adds to stderr.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import TextIO

from tqdm import tqdm

MIB = 1 << 20


@contextlib.contextmanager
def aborting(bar: "Progress"):
    """End ``bar`` without its summary when the block fails: the error line comes next."""
    try:
        yield
    except BaseException:
        bar.abort()
        raise


class Progress:
    """``Progress(stream, files, bytes, what)``: ``files`` and ``bytes`` are the expected totals
    (0 when unknown: the bar then shows counts and rate, no ETA); ``what`` names the command in
    the summary. ``update(files, bytes)`` takes the running totals done so far (``file_done(size)``
    adds one file); ``close()`` prints ``<what>: <files> files, <size> in <elapsed> (<rate>)`` and
    returns that line; ``abort()`` ends the bar without it, when the command fails. The elapsed
    time runs from ``started`` (a ``time.monotonic()``), by default from construction: a command
    that must read something before it knows the totals passes when it began."""

    def __init__(self, stream: TextIO, files: int, bytes: int, what: str, started: float | None = None):
        self.stream = stream
        self.what = what
        self.expected_files = files
        self.files = self.bytes = 0
        self.started = time.monotonic() if started is None else started
        self._ended: float | None = None
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self._bar = None
        if self.live:
            # A terminal that reports no size (0x0: a fresh pty, a serial console) would get no bar
            # from tqdm, which hides bars below the last row: it is drawn as on an 80x24 one.
            sized = _columns(stream) > 0
            self._bar = tqdm(total=bytes or None, file=stream, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=what, mininterval=0.1, dynamic_ncols=sized, ncols=None if sized else 80,
                             nrows=None if sized else 24, leave=True)
            self._bar.set_postfix_str(self._files_text(), refresh=False)

    def _files_text(self) -> str:
        return f"{self.files}/{self.expected_files} files" if self.expected_files else f"{self.files} files"

    def update(self, files: int, bytes: int) -> None:
        """Record the running totals: ``files`` done, ``bytes`` of them."""
        step, self.files, self.bytes = bytes - self.bytes, files, bytes
        if self._bar is None:
            return
        if self._bar.total is not None and self.bytes > self._bar.total:
            self._bar.total = self.bytes  # an estimate (the last snapshot's size) ran short
        self._bar.set_postfix_str(self._files_text(), refresh=False)
        self._bar.update(step)

    def file_done(self, size: int) -> None:
        """One more file done, of ``size`` bytes."""
        self.update(self.files + 1, self.bytes + size)

    @property
    def elapsed(self) -> float:
        """Seconds from ``started`` to ``close()`` (to now, before it)."""
        return (self._ended if self._ended is not None else time.monotonic()) - self.started

    def close(self) -> str:
        """End the bar, if any, and print the one summary line; return it."""
        self._ended = time.monotonic()
        seconds = self.elapsed
        if self._bar is not None:
            self._bar.close()
        rate = self.bytes / seconds / MIB if seconds > 0 else 0.0
        line = (f"{self.what}: {self.files} files, {_size(self.bytes)} in {seconds:.1f} s "
                f"({rate:.1f} MiB/s)")
        print(line, file=self.stream, flush=True)
        return line

    def abort(self) -> None:
        """End the bar, if any, without a summary: the command's error is the line that follows."""
        if self._bar is not None:
            self._bar.close()


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
