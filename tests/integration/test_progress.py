"""Progress of backup and restore: a bar on a terminal (a pty here), one summary line in a pipe,
and the elapsed time a backup reports covering the whole backup."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

import pytest

from statesync.cli.progress import Progress

from ..sidecar import statesync_env
from ..support import make_tree, statesync_cmd

SUMMARY = re.compile(r"^(backup|restore): (\d+) files, [\d.]+ (B|KiB|MiB|GiB) in ([\d.]+) s \(([\d.]+) MiB/s\)$")


def _in_pty(argv, env, size: tuple[int, int] | None = None, timeout=60) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a pseudo-terminal of ``size`` (rows, columns;
    None: one that reports no size, as a fresh pty does); its exit code and output."""
    master, slave = pty.openpty()
    if size is not None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    proc = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), out.decode(errors="replace")


def _not_logged(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not JSON log events (a warning about plain-text keys)."""
    return [line for line in stderr.splitlines() if not line.startswith("{")]


def test_the_summary_names_files_size_time_and_rate_in_one_line():
    read, write = os.pipe()
    with os.fdopen(write, "w") as stream:
        bar = Progress(stream, 3, 3 << 20, "restore")
        for n in range(1, 4):
            bar.update(n, n << 20)
        line = bar.close()
    with os.fdopen(read) as got:
        assert got.read() == line + "\n"
    assert SUMMARY.match(line), line
    assert line.startswith("restore: 3 files, 3.0 MiB in ")


@pytest.mark.consul
def test_backup_and_restore_into_a_pipe_print_exactly_one_summary_line_on_stderr(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    env = statesync_env(f"http://{consul.addr}", prefix, root)
    backup = subprocess.run(statesync_cmd("backup"), env=env, capture_output=True, text=True, timeout=120)
    assert backup.returncode == 0, backup.stderr
    assert backup.stdout.startswith("snapshot ")
    lines = _not_logged(backup.stderr)
    assert len(lines) == 1 and SUMMARY.match(lines[0]), backup.stderr
    subprocess.run(["rm", "-rf", str(root)], check=True)
    restore = subprocess.run(statesync_cmd("restore"), env=env, capture_output=True, text=True, timeout=120)
    assert restore.returncode == 0, restore.stderr
    lines = _not_logged(restore.stderr)
    assert len(lines) == 1 and SUMMARY.match(lines[0]), restore.stderr
    assert lines[0].startswith("restore: 8 files, 3.0 MiB in ")
    assert "\r" not in restore.stderr


@pytest.mark.consul
def test_backup_and_restore_on_a_terminal_draw_a_bar_with_files_rate_and_eta(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    env = statesync_env(f"http://{consul.addr}", prefix, root)
    code, out = _in_pty(statesync_cmd("backup"), env)
    assert code == 0, out
    assert "backup:" in out and "files" in out and "B/s" in out, out
    subprocess.run(["rm", "-rf", str(root)], check=True)
    code, out = _in_pty(statesync_cmd("restore"), env, size=(30, 100))
    assert code == 0, out
    # tqdm's bar: the command's name, a percentage, files done of all, bytes, a rate and an ETA.
    assert re.search(r"restore: +\d+%\|", out), out
    assert "8/8 files" in out, out
    assert re.search(r"<[\d:?]+, +[\d.?]+ *[KMG]?i?B/s", out), out
    summary = [line for line in out.replace("\r", "\n").splitlines() if SUMMARY.match(line.strip())]
    assert summary and summary[-1].startswith("restore: 8 files, 3.0 MiB in "), out
