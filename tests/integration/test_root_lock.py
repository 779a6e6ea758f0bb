"""One writer per root, and an interrupted restore is always settled (issue 14, items 3 and 4).

Real processes against a real Consul: two restores into one root, a restore or a backup
while a sidecar mirrors the root, a SIGKILLed holder, and a restore killed in the middle of
its swap, finished by whichever command comes next.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ..sidecar import Sidecar
from ..support import REPO, plain_lines, statesync_cmd, tree_state
from .test_restore_safety import Env, icinga_tree

JOURNAL = ".statesync-restore-journal.json"
LOCK = ".statesync-lock"

# Holds the root lock of argv[1] as command argv[2] until stdin closes, the way docs/FORMAT.md
# describes it (flock, then the holder text); the names after that become staging
# directories with work in them, as a restore in progress has.
HOLDER = """
import fcntl, json, os, sys, time
from pathlib import Path
root = Path(sys.argv[1])
root.mkdir(parents=True, exist_ok=True)
fd = os.open(root / ".statesync-lock", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
os.write(fd, json.dumps({"pid": os.getpid(), "command": sys.argv[2], "since": since}).encode())
for name in sys.argv[3:]:
    (root / name).mkdir()
    (root / name / "work").write_text("in progress")
print("held", flush=True)
sys.stdin.read()
"""


def one_error_line(proc) -> str:
    lines = plain_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("statesync: error: "), proc.stderr
    return lines[0]


@pytest.fixture
def env(consul, prefix, tmp_path):
    """The node's source tree, backed up from tmp_path/root."""
    return Env(consul, prefix, tmp_path / "root")


@pytest.fixture
def target(consul, prefix, tmp_path):
    """Another root of the same node: where the restores go."""
    return Env(consul, prefix, tmp_path / "target")


@pytest.fixture
def holder():
    """Start a process that holds a root's lock: holder(root, command, *staging_names)."""
    procs: list[subprocess.Popen] = []

    def start(root: Path, command: str, *staging: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), command, *staging], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        assert line == "held\n", line + proc.stdout.read()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def sidecars():
    started: list[Sidecar] = []

    def start(env: Env, name: str) -> Sidecar:
        sidecar = Sidecar(env.env(), env.root.parent / f"{name}.log")
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        sidecar.kill()


def _leftovers(root: Path) -> list[str]:
    """statesync's own working files that must not outlive a command."""
    return sorted(n for n in os.listdir(root) if n.startswith((".statesync-staging-", JOURNAL, LOCK)))


def _backed_up(env: Env, files: int = 0, big: int = 0) -> dict:
    """Fill env.root with an Icinga 2 tree (plus ``files`` small files and ``big`` random bytes
    of state), back it up, and return its tree_state."""
    icinga_tree(env.root)
    rng = random.Random(14)
    if files:
        (env.root / "api/zones").mkdir(parents=True)
        for i in range(files):
            (env.root / f"api/zones/f{i:05d}.conf").write_bytes(rng.randbytes(rng.randint(100, 3000)))
    if big:
        (env.root / "icinga2.state").write_bytes(rng.randbytes(big))
    env.run("backup", check=True)
    return tree_state(env.root)


# -- the lock itself, in this process ------------------------------------------------------

def test_the_holder_text_round_trips_and_the_refusal_names_pid_command_and_time():
    from statesync.restore.rootlock import Holder, busy_message
    h = Holder(1234, "run --role master", "2026-12-01T15:00:00Z")
    assert Holder.decode(h.encode()) == h
    assert busy_message(Path("/var/lib/icinga2"), h) == (
        "/var/lib/icinga2 is in use by statesync run --role master (pid 1234, since 2026-12-01T15:00:00Z); "
        "stop it first (see README: restore runbook)")
    assert "on other-host" in Holder(1, "backup", "t", host="other-host").describe()
    assert "in use by another statesync process;" in busy_message(Path("/r"), None)
    for junk in (b"", b"{", b"[]", b'{"pid": "1", "command": "x"}', b'{"pid": 1}'):
        with pytest.raises(ValueError):
            Holder.decode(junk)


def test_a_nested_hold_reuses_the_lock_and_the_last_release_removes_the_lock_file(tmp_path):
    from statesync.restore.rootlock import hold_root, holds
    root = tmp_path / "root"
    root.mkdir()
    with hold_root(root, "restore"):
        assert holds(root)
        with hold_root(root, "restore"):
            assert holds(root)
        assert holds(root)
        fd = os.open(root / LOCK, os.O_RDONLY)  # any other open file description is excluded
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not holds(root)
    assert os.listdir(root) == []


def test_a_root_that_taking_the_lock_created_is_removed_again_only_while_it_is_empty(tmp_path):
    from statesync.restore.rootlock import hold_root
    root = tmp_path / "new/deeper/root"
    with pytest.raises(RuntimeError), hold_root(root, "restore", create=True):
        raise RuntimeError("the restore failed")
    assert not (tmp_path / "new").exists()
    with pytest.raises(RuntimeError), hold_root(root, "restore", create=True):
        (root / "written-meanwhile").write_text("not ours")
        raise RuntimeError("the restore failed")
    assert os.listdir(root) == ["written-meanwhile"]


# -- one writer per root ------------------------------------------------------------------

def test_a_restore_into_a_root_another_process_holds_is_refused_at_once_naming_the_holder(env, target, holder):
    _backed_up(env)
    held = holder(target.root, "restore")
    proc = target.run("restore")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert f"{target.root} is in use by statesync restore (pid {held.pid}, since " in line
    assert line.endswith("stop it first (see README: restore runbook)")
    # The holder lets go only when its stdin closes: a restore that waited for the lock would never return.
    assert held.poll() is None, "refused while the holder still holds the lock, not after waiting for it"
    assert os.listdir(target.root) == [LOCK], "nothing but the holder's lock file"


def test_two_restores_started_together_into_one_root_leave_exactly_the_snapshot(env, target):
    snap = _backed_up(env, files=2000, big=8 * 1024 * 1024)
    procs = [subprocess.Popen(statesync_cmd("restore"), env=target.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], outs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert "restored snapshot" in outs[winner][0]
    line = one_error_line(subprocess.CompletedProcess([], 1, *outs[loser]))
    # Started together, the second meets the first's lock; started after the first had
    # finished, it would meet a full root. Either way exactly one writes.
    assert (f"is in use by statesync restore (pid {procs[winner].pid}," in line
            or "is not empty" in line), line
    print(f"the refused restore said: {line}")
    assert tree_state(target.root) == snap
    assert _leftovers(target.root) == []


def test_a_restore_while_a_sidecar_mirrors_the_root_is_refused_and_the_root_is_untouched(env, sidecars):
    _backed_up(env)
    sidecar = sidecars(env, "sidecar")
    sidecar.wait_for_log('"event": "mirroring"')
    before = tree_state(env.root)
    proc = env.run("restore", "--force")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_error_line(proc)
    assert f"is in use by statesync run --role master (pid {sidecar.pid}, since " in line
    assert "stop it first" in line
    assert tree_state(env.root) == before
    assert not (env.root / ".statesync-aside").exists()
    assert sidecar.stop() == 0
    assert not (env.root / LOCK).exists(), "a clean stop removes the lock file"


def test_a_backup_while_a_sidecar_holds_the_root_is_refused_naming_it(env, sidecars):
    _backed_up(env)
    sidecar = sidecars(env, "sidecar")
    sidecar.wait_for_log('"event": "mirroring"')
    proc = env.run("backup")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"is in use by statesync run --role master (pid {sidecar.pid}, " in one_error_line(proc)
    assert proc.stdout == ""
    assert sidecar.stop() == 0


def test_a_sigkilled_holder_never_blocks_the_next_command(env, sidecars, holder):
    _backed_up(env)
    sidecar = sidecars(env, "sidecar")
    sidecar.wait_for_log('"event": "mirroring"')
    sidecar.kill()
    from statesync.restore.rootlock import read_holder
    assert read_holder(env.root).pid == sidecar.pid, "the dead holder's text is still there"
    (env.root / "icinga2.state").write_bytes(b"after the kill")
    proc = env.run("backup")
    assert proc.returncode == 0, proc.stderr
    assert not (env.root / LOCK).exists()
    # the same for a holder that is not statesync's command line
    held = holder(env.root, "backup")
    held.kill()
    held.wait(10)
    env.run("backup", check=True)


def test_a_second_sidecar_on_the_same_root_waits_for_the_first_and_then_takes_over(env, sidecars):
    _backed_up(env)
    first = sidecars(env, "first")
    first.wait_for_log('"event": "mirroring"')
    second = sidecars(env, "second")
    second.wait_for_log('"event": "waiting for the root lock"')
    assert f"pid {first.pid}" in second.output()
    assert '"event": "ready"' not in second.output()
    assert first.stop() == 0
    second.wait_for_log('"event": "mirroring"')
    assert second.stop() == 0


def test_a_restore_never_removes_the_staging_directory_of_a_restore_in_progress(env, target, holder):
    _backed_up(env)
    holder(target.root, "restore", ".statesync-staging-inprogress")
    proc = target.run("restore", "--force")
    assert (target.root / ".statesync-staging-inprogress/work").read_text() == "in progress"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "is in use by statesync restore" in one_error_line(proc)


def test_a_failed_restore_removes_only_its_own_staging_and_never_a_root_holding_what_it_did_not_make(env, target):
    from statesync.errors import StatesyncError
    from statesync.restore.apply import restore
    _backed_up(env)
    root = target.root
    assert not root.exists()

    def meanwhile(files, written):
        # Somebody who ignores the lock writes into the root the restore created; then the
        # restore fails half way through its staging.
        (root / "written-meanwhile").write_text("not the restore's")
        (root / ".statesync-staging-foreign").mkdir()
        raise OSError(errno.EIO, "simulated write error")

    with pytest.raises(StatesyncError, match="restore failed"):
        restore(target.repo, target.repo.head().record, root, progress=meanwhile)
    assert sorted(os.listdir(root)) == [".statesync-staging-foreign", "written-meanwhile"]


def test_a_failed_restore_into_a_missing_root_leaves_no_directory_behind(env, consul, prefix, tmp_path):
    _backed_up(env)
    rec = env.repo.head().record
    victim = sorted(env.repo.refs(rec) - set(rec.manifest_chunks))[0]
    env.repo.store.put(env.cfg.layout.chunk(victim), b"bit rot")
    target = Env(consul, prefix, tmp_path / "new/deeper/root")
    proc = target.run("restore")
    assert proc.returncode == 1
    assert "sha256" in one_error_line(proc)
    assert not (tmp_path / "new").exists()


def test_a_failed_restore_leaves_an_existing_root_as_it_was_without_a_lock_file_or_a_new_mtime(env, target):
    _backed_up(env)
    rec = env.repo.head().record
    victim = sorted(env.repo.refs(rec) - set(rec.manifest_chunks))[0]
    env.repo.store.put(env.cfg.layout.chunk(victim), b"bit rot")
    target.root.mkdir()
    (target.root / "mine").write_text("the user's own file")
    os.utime(target.root, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    proc = target.run("restore", "--force")
    assert "sha256" in one_error_line(proc)
    assert os.listdir(target.root) == ["mine"]
    assert os.stat(target.root).st_mtime_ns == 1_600_000_000_000_000_000


def test_the_lock_file_never_changes_the_root_between_two_backups(env):
    _backed_up(env)
    mtime = os.stat(env.root).st_mtime_ns
    assert env.run("backup", check=True).stdout.startswith("unchanged")
    assert os.stat(env.root).st_mtime_ns == mtime


# -- an interrupted restore is settled first, by every entry point ---------------------------

@pytest.fixture
def killed_mid_swap(consul, prefix, target):
    """Leave target.root as a restore of the head killed half way through its swap: the
    staged tree complete, the journal written, the old content moved aside, and the first of
    the new names (ca/, so the root looks like it holds Icinga 2 state) moved into place."""
    def make() -> None:
        _killed_mid_swap(Env(consul, prefix, target.root.parent / "scratch"), target)
    return make


def _killed_mid_swap(scratch: Env, target: Env) -> None:
    scratch.run("restore", check=True)  # a staged tree exactly as restore writes it
    (scratch.root / ".statesync-ready").unlink()
    root = target.root
    root.mkdir()
    aside = root / ".statesync-aside/20261201T150000Z"
    aside.mkdir(parents=True)
    (aside / "stale.conf").write_text("what --force moved aside")
    staging = root / ".statesync-staging-killed"
    os.rename(scratch.root, staging)
    new = sorted(os.listdir(staging))
    (root / JOURNAL).write_text(json.dumps({"staging": staging.name, "aside": str(aside.relative_to(root)),
                                            "old": ["stale.conf"], "new": new}))
    assert new[0] == "ca"
    os.rename(staging / "ca", root / "ca")


def _settled(target: Env, snap: dict) -> None:
    assert tree_state(target.root) == snap
    assert _leftovers(target.root) == []
    assert (target.root / ".statesync-aside/20261201T150000Z/stale.conf").exists()


def test_restore_if_empty_finishes_a_restore_killed_mid_swap(env, target, killed_mid_swap):
    snap = _backed_up(env)
    killed_mid_swap()
    proc = target.run("restore", "--if-empty", check=True)
    assert "already holds Icinga 2 state" in proc.stdout
    _settled(target, snap)


def test_the_sidecar_start_finishes_a_restore_killed_mid_swap(env, target, killed_mid_swap, sidecars):
    snap = _backed_up(env)
    killed_mid_swap()
    sidecar = sidecars(target, "sidecar")
    sidecar.wait_for_log('"event": "mirroring"')
    assert sidecar.stop() == 0
    _settled(target, snap)


def test_backup_finishes_a_restore_killed_mid_swap_before_it_snapshots(env, target, killed_mid_swap,
                                                                       consul, prefix, tmp_path):
    snap = _backed_up(env)
    killed_mid_swap()
    target.run("backup", check=True)
    _settled(target, snap)
    check = Env(consul, prefix, tmp_path / "check")
    check.run("restore", check=True)
    assert tree_state(check.root) == snap, "the backup committed the whole restored tree, not half of it"
