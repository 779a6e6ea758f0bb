"""What changed under the root, from watchdog's events: the burst that starts a commit, and the
directories whose only news is a change below them, which go with the next commit but start none."""
from __future__ import annotations

import os
import threading
import time

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from ..config import Config
from ..disk import INTERNAL_PREFIX


class Changes(FileSystemEventHandler):
    """Collects root-relative paths from watchdog events; thread-safe."""

    def __init__(self, root: str, cfg: Config):
        self.root = root.rstrip("/") + "/"
        self.cfg = cfg
        self.lock = threading.Lock()
        self.paths: set[str] = set()
        # Directories whose only news is a change below them, seen (or left out) already: they
        # go with the next commit but start none. Icinga 2's temporary file, created, written,
        # closed and renamed, touches its directory four times.
        self.quiet_dirs: set[str] = set()
        self._parents: set[str] = set()
        self.first = 0.0
        self.last = 0.0
        self.event = threading.Event()

    def _rel(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        if not path.startswith(self.root):
            return None
        rel = path[len(self.root):].rstrip("/")
        if not rel or rel.startswith(INTERNAL_PREFIX) or self.cfg.path_filter.excluded(rel):
            # included() is not asked here: a directory event must still reach the scanner. Out of
            # the roots' scope is excluded too: Icinga's log under var/log must not wake a scan.
            return None
        return rel

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [os.fsdecode(event.src_path)]
        if getattr(event, "dest_path", ""):
            paths.append(os.fsdecode(event.dest_path))
        if event.is_directory and event.event_type == "modified" and paths[0] in self._parents:
            # watchdog follows an event with its parent's (as inotify's IN_CREATE, IN_CLOSE_WRITE, ...)
            rel = self._rel(paths[0])
            if rel:
                with self.lock:
                    self.quiet_dirs.add(rel)
            return
        self._parents = {os.path.dirname(p) for p in paths}
        rels = [r for r in map(self._rel, paths) if r]
        if not rels:
            return
        now = time.monotonic()
        with self.lock:
            if not self.paths:
                self.first = now
            self.paths.update(rels)
            self.last = now
        self.event.set()

    def settled(self, debounce: float, max_wait: float) -> float:
        """Seconds left until the burst counts as settled (0: take it now)."""
        with self.lock:
            if not self.paths:
                return -1.0
            now = time.monotonic()
            return max(0.0, min(self.last + debounce, self.first + max_wait) - now)

    def take(self) -> set[str]:
        burst, quiet_dirs = self.take_apart()
        return burst | quiet_dirs

    def take_apart(self) -> tuple[set[str], set[str]]:
        """The settled burst, and apart from it the directories whose only news came from below."""
        with self.lock:
            taken, self.paths = self.paths, set()
            quiet_dirs, self.quiet_dirs = self.quiet_dirs, set()
            self.event.clear()
            return taken, quiet_dirs

    def add_quiet(self, paths: set[str]) -> None:
        with self.lock:
            self.quiet_dirs.update(paths)
