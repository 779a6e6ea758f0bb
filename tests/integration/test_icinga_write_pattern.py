"""Icinga 2's way of writing files (lib/base/atomic-file.cpp: mkstemp on NAME.tmp.XXXXXX, write,
fsync, rename over NAME) against a real `statesync run`: one commit per rewrite, never a
temporary file in a snapshot; and the sidecar's timers (min_interval, idle garbage collection)."""
from __future__ import annotations

import os
import random
import string
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from statesync.snapshot.chunking import sha256

from ..ha_support import node_repo
from ..sidecar import Sidecar
from ..support import clean_env, statesync_cmd, wait_for

pytestmark = pytest.mark.consul

# Only to stop a hang: a loaded machine may take this long for what takes a second here.
PATIENCE = 120

# mkstemp's alphabet, as Icinga 2's own copy of it has it (lib/base/utility.cpp)
LETTERS = string.ascii_letters + string.digits
ROOTS = "state=var/lib/icinga2,config=etc/icinga2"


def icinga_write(path: Path, content: bytes, pieces: int = 8, pause: float = 0.15) -> None:
    """Write ``content`` to ``path`` as Icinga 2's AtomicFile does, slowly, with one pause
    longer than the sidecar's debounce halfway (Icinga serialising objects between flushes)."""
    tmp = path.with_name(f"{path.name}.tmp.{''.join(random.choices(LETTERS, k=6))}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        step = -(-len(content) // pieces)
        for i in range(pieces):
            os.write(fd, content[i * step:(i + 1) * step])
            time.sleep(0.7 if i == pieces // 2 else pause)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def dump(i: int, size: int = 3 * 1024 * 1024) -> bytes:
    rng = random.Random(i)
    line = f"icinga2.state dump {i} ".encode()
    return b"".join(line + rng.randbytes(40).hex().encode() + b"\n" for _ in range(size // (len(line) + 81)))


def head_has(repo, path: str, content: bytes) -> bool:
    rec = repo.head().record
    entry = repo.manifest(rec).by_path().get(path) if rec is not None else None
    return entry is not None and entry.sha256 == sha256(content)


def all_paths(repo) -> set[str]:
    return {p for rec in repo.records() for p in repo.manifest(rec).by_path()}


def start(consul, prefix: str, tmp_path: Path, settings: dict, roots: bool):
    root = tmp_path / "root"
    state = root / "var/lib/icinga2" if roots else root
    (state / "certs").mkdir(parents=True)
    (state / "certs/n1.crt").write_text("cert 1")
    if roots:
        (root / "etc/icinga2").mkdir(parents=True)
        (root / "etc/icinga2/zones.conf").write_text("zones")
        settings = {**settings, "roots": ROOTS}
    sidecar = Sidecar.start([consul.addr], prefix, root, tmp_path / "sidecar.log", ready_beside_log=True, **settings)
    repo = node_repo([consul.addr], prefix)
    wait_for(lambda: repo.head().record is not None, PATIENCE, "first commit", sidecar.output)
    # The head is in Consul a moment before the sidecar logs its commit: counting commits from
    # here on would otherwise, now and then, count the first one too.
    wait_for(lambda: sidecar.count('"event": "committed"') >= 1, PATIENCE, "first commit logged", sidecar.output)
    return sidecar, repo, state, "var/lib/icinga2/" if roots else ""


@pytest.mark.parametrize("roots", [False, True], ids=["root", "named-roots"])
def test_each_rewrite_of_icinga2_state_through_a_temporary_file_costs_exactly_one_commit(consul, prefix, tmp_path,
                                                                                       roots):
    sidecar, repo, state, rel = start(consul, prefix, tmp_path, {}, roots)
    try:
        before = len(repo.records())
        committed = sidecar.count('"event": "committed"')
        contents = [dump(i) for i in range(3)]
        for content in contents:
            writer = threading.Thread(target=icinga_write, args=(state / "icinga2.state", content))
            writer.start()
            writer.join()
            wait_for(lambda c=content: head_has(repo, f"{rel}icinga2.state", c), PATIENCE, "the dump in the head",
                     sidecar.output)
        time.sleep(2.0)  # a late, superfluous commit would land by now
        assert len(repo.records()) - before == 3
        assert sidecar.count('"event": "committed"') - committed == 3
        assert not [p for p in all_paths(repo) if ".tmp." in p]
        assert head_has(repo, f"{rel}icinga2.state", contents[-1])
    finally:
        assert sidecar.stop() == 0


def test_backup_never_takes_an_icinga_temporary_file(consul, prefix, tmp_path):
    root = tmp_path / "root"
    (root / "api/packages/_api").mkdir(parents=True)
    (root / "icinga2.state").write_bytes(b"whole")
    (root / "icinga2.state.tmp.aZ3k9Q").write_bytes(b"half")
    (root / "api/packages/_api/active-stage.tmp.000000").write_bytes(b"half")
    (root / "modified-attributes.conf.tmp.Xy12ab").write_bytes(b"half")
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE="node1", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    proc = subprocess.run(statesync_cmd("backup"), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    paths = all_paths(node_repo([consul.addr], prefix))
    assert "icinga2.state" in paths
    assert not [p for p in paths if ".tmp." in p]


def test_a_paced_file_is_committed_once_per_interval_and_its_last_change_is_not_lost(consul, prefix, tmp_path):
    sidecar, repo, state, _ = start(consul, prefix, tmp_path, {"min_interval": "icinga2.state=4s"}, False)
    try:
        first, second, third = dump(10, 100_000), dump(11, 100_000), dump(12, 100_000)
        (state / "icinga2.state").write_bytes(first)
        wait_for(lambda: head_has(repo, "icinga2.state", first), PATIENCE, "the first change", sidecar.output)
        (state / "icinga2.state").write_bytes(second)
        time.sleep(1.0)  # two changes inside the interval: only the last may go
        (state / "icinga2.state").write_bytes(third)
        wait_for(lambda: head_has(repo, "icinga2.state", third), PATIENCE, "the waiting change", sidecar.output)
        records = repo.records()
        assert not [r for r in records if head_has_record(repo, r, second)]
        # The snapshots' own times, not the test's: a loaded machine only makes the gap longer.
        went = [min(_created(r) for r in records if head_has_record(repo, r, c)) for c in (first, third)]
        assert went[1] - went[0] >= 4.0 - 0.05, f"committed {went[1] - went[0]:.2f}s apart, inside the interval"
    finally:
        assert sidecar.stop() == 0


def _created(record) -> float:
    return datetime.fromisoformat(record.created).timestamp()


def head_has_record(repo, rec, content: bytes) -> bool:
    entry = repo.manifest(rec).by_path().get("icinga2.state")
    return entry is not None and entry.sha256 == sha256(content)


def test_a_certificate_change_goes_at_once_and_takes_the_waiting_state_along(consul, prefix, tmp_path):
    sidecar, repo, state, rel = start(consul, prefix, tmp_path, {"min_interval": "**/icinga2.state=1h"}, True)
    try:
        first, second = dump(20, 50_000), dump(21, 50_000)
        (state / "icinga2.state").write_bytes(first)
        wait_for(lambda: head_has(repo, f"{rel}icinga2.state", first), PATIENCE, "the first change", sidecar.output)
        (state / "icinga2.state").write_bytes(second)
        # Held for an hour; seen or not yet seen by the sidecar, it must go with the certificate.
        time.sleep(1.5)
        assert head_has(repo, f"{rel}icinga2.state", first)
        (state / "certs/n1.crt").write_text("cert 2")
        wait_for(lambda: head_has(repo, f"{rel}certs/n1.crt", b"cert 2"), PATIENCE, "the certificate", sidecar.output)
        assert head_has(repo, f"{rel}icinga2.state", second)
    finally:
        assert sidecar.stop() == 0


def test_an_idle_sidecar_collects_its_garbage_without_a_new_commit(consul, prefix, tmp_path):
    settings = {"gc_interval": "1", "gc_grace": "0", "keep": "1", "full_scan_interval": "3600"}
    sidecar, repo, state, _ = start(consul, prefix, tmp_path, settings, False)
    store = repo.store

    def stored() -> set[str]:
        return {d for k in store.keys(repo.layout.chunks) if (d := repo.layout.digest_of_chunk_key(k))}

    try:
        old = dump(30, 200_000)
        (state / "icinga2.state").write_bytes(old)
        wait_for(lambda: head_has(repo, "icinga2.state", old), PATIENCE, "the first version", sidecar.output)
        old_chunks = set(repo.manifest(repo.head().record).by_path()["icinga2.state"].chunks)
        new = dump(31, 200_000)
        (state / "icinga2.state").write_bytes(new)
        wait_for(lambda: head_has(repo, "icinga2.state", new), PATIENCE, "the second version", sidecar.output)
        assert old_chunks - set(repo.manifest(repo.head().record).by_path()["icinga2.state"].chunks)
        head = repo.head().record.id
        wait_for(lambda: not (old_chunks & stored()), PATIENCE, "the unreferenced chunks collected", sidecar.output)
        assert repo.head().record.id == head, "collected by the idle sidecar's timer, not by a commit"
    finally:
        assert sidecar.stop() == 0


def test_a_temporary_files_own_events_and_its_directorys_start_no_burst_but_the_rename_does(tmp_path):
    from watchdog.events import DirModifiedEvent, FileClosedEvent, FileCreatedEvent, FileModifiedEvent, FileMovedEvent

    from statesync import config
    from statesync.sidecar.changes import Changes
    cfg = config.load({"node": "n1", "root": str(tmp_path), "roots": ROOTS}, env={})
    changes = Changes(str(tmp_path), cfg)
    state = f"{tmp_path}/var/lib/icinga2"
    tmp = f"{state}/icinga2.state.tmp.q7Rz0b"
    for event in (FileCreatedEvent(tmp), DirModifiedEvent(state), FileModifiedEvent(tmp),
                  FileClosedEvent(tmp), DirModifiedEvent(state)):
        changes.on_any_event(event)
    assert changes.settled(0.5, 5.0) < 0
    for event in (FileMovedEvent(tmp, f"{state}/icinga2.state"), DirModifiedEvent(state)):
        changes.on_any_event(event)
    assert changes.take_apart() == ({"var/lib/icinga2/icinga2.state"}, {"var/lib/icinga2"})
    changes.on_any_event(FileModifiedEvent(f"{state}/certs/n1.crt"))
    changes.on_any_event(DirModifiedEvent(state))  # its own (chmod): no child's
    assert changes.take_apart()[0] == {"var/lib/icinga2/certs/n1.crt", "var/lib/icinga2"}


@pytest.mark.parametrize("roots", ["", ROOTS])
def test_the_default_excludes_leave_out_icingas_temporary_files_at_any_depth_and_nothing_like_them(roots):
    from statesync import config
    cfg = config.load({"node": "n1", "root": "/data", "roots": roots or None}, env={})
    state = "var/lib/icinga2/" if roots else ""
    f = cfg.path_filter
    for path in (f"{state}icinga2.state.tmp.aZ3k9Q", f"{state}certs/n1.crt.tmp.000000",
                 f"{state}api/packages/_api/active-stage.tmp.Ab1Cd2"):
        assert f.excluded(path), path
    if roots:
        assert f.excluded("etc/icinga2/constants.conf.tmp.x1Y2z3")
    for path in (f"{state}icinga2.state", f"{state}icinga2.state.tmp.short", f"{state}notes.tmp.d/x"):
        assert not f.excluded(path), path
