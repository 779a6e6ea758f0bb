"""A live progress bar for terminals; nothing at all elsewhere (the caller prints a summary)."""
from __future__ import annotations

import time
from typing import TextIO


class ProgressBar:
    """Files and bytes done out of a known total, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, files: int, total_bytes: int, width: int = 30):
        self.stream = stream
        self.files = max(files, 1)
        self.total = max(total_bytes, 1)
        self.width = width
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self._last = 0.0
        self._drawn = False

    def update(self, files: int, done_bytes: int) -> None:
        now = time.monotonic()
        if not self.live or (now - self._last < 0.1 and files < self.files):
            return
        self._last = now
        filled = int(self.width * min(done_bytes / self.total, 1.0))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {files}/{self.files} files  "
                          f"{done_bytes / 1048576:.1f}/{self.total / 1048576:.1f} MiB")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
