"""Several roots in one snapshot: the official icinga/icinga2 image's /data volume.

/data holds etc/icinga2 and var/lib/icinga2 (mirrored together, from one atomic snapshot)
beside var/log, var/cache, var/run and var/spool (never mirrored, never touched). Real
`statesync` processes against a real Consul.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.errors import PlaintextSecret
from statesync.repo.repository import Repo

from ..sidecar import Sidecar, statesync_env
from ..support import plain_lines, run_statesync, tree_state, wait_for
from .test_restore_safety import make_ca_pem

pytestmark = pytest.mark.consul

ROOTS = "state=var/lib/icinga2,config=etc/icinga2"
SUBTREES = ("etc/icinga2", "var/lib/icinga2")
SALT = "9f2c1e7a-ticket-salt-4b1d"
JOURNAL = ".statesync-restore-journal.json"
# What the entrypoint and Icinga 2 keep on /data beside the two mirrored subtrees.
BESIDE = ("var/log", "var/cache", "var/run", "var/spool")


class Data:
    """A /data-like volume of node master1, and the statesync commands on it."""

    def __init__(self, consul, prefix, root: Path, key: Path | None = None, plain: bool = True, roots: str = ROOTS):
        self.addr, self.prefix, self.root, self.key, self.plain, self.roots = consul.addr, prefix, root, key, plain, roots
        flags = {"prefix": prefix, "node": "master1", "consul.addr": [consul.addr], "root": str(root)}
        self.cfg = config.load({**flags, "roots": roots} if roots else flags, env={})
        self.store = Store(self.cfg.consul)
        self.repo = Repo(self.store, self.cfg.layout, self.cfg.chunk_size, self.cfg.keep)

    def env(self, **extra) -> dict:
        settings: dict = {"roots": self.roots} if self.roots else {}
        if self.key is not None:
            settings["encryption_key_file"] = self.key
        return statesync_env(self.addr, self.prefix, self.root, "master1", plaintext=self.plain, **settings, **extra)

    def run(self, *args, check=False, **extra) -> subprocess.CompletedProcess:
        return run_statesync(args, self.env(**extra), check)

    def sidecar(self, log: Path, *extra) -> Sidecar:
        return Sidecar(self.env(STATESYNC_DEBOUNCE="0.1", STATESYNC_MAX_WAIT="0.5"), log, args=extra)


def data_tree(root: Path, keys: bool = True) -> None:
    """What the official image keeps on /data once Icinga 2 ran: config, state, and the rest."""
    etc, lib = root / "etc/icinga2", root / "var/lib/icinga2"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "features-available").mkdir()
    (etc / "features-enabled").mkdir()
    (etc / "constants.conf").write_text(f'const NodeName = "master1"\nconst ZoneName = "master"\n'
                                        f'const TicketSalt = "{SALT}"\n')
    (etc / "zones.conf").write_text('object Zone "master" { endpoints = [ "master1" ] }\n')
    (etc / "features-available/api.conf").write_text('object ApiListener "api" { accept_config = true }\n')
    os.symlink("../features-available/api.conf", etc / "features-enabled/api.conf")
    (etc / "conf.d/api-users.conf").write_text('object ApiUser "root" { password = "api-pw-31337" }\n')
    os.chmod(etc / "conf.d/api-users.conf", 0o640)
    (lib / "certs").mkdir(parents=True)
    (lib / "api/log").mkdir(parents=True)
    (lib / "api/log/current").write_text("cluster replay log")
    (lib / "icinga2.state").write_bytes(os.urandom(3000))
    (lib / "certs/master1.crt").write_text("node certificate")
    if keys:
        crt, key = make_ca_pem()
        (lib / "ca").mkdir()
        (lib / "ca/ca.crt").write_bytes(crt)
        (lib / "ca/ca.key").write_bytes(key)
        os.chmod(lib / "ca/ca.key", 0o600)
    for d in BESIDE:
        (root / d / "icinga2").mkdir(parents=True)
    (root / "var/log/icinga2/icinga2.log").write_text("[information] started\n")
    (root / "var/cache/icinga2/x").write_text("cache")
    os.chmod(root / "var/lib", 0o751)
    os.chmod(root / "etc", 0o711)
    os.utime(root / "var/lib/icinga2/icinga2.state", ns=(1_600_000_000_123_456_789,) * 2)


def subtree(root: Path, rel: str) -> dict:
    """tree_state of one subtree, without what the default excludes leave out (api/log)."""
    return {k: v for k, v in tree_state(root / rel).items() if not k.startswith("api/log")}


def meta(path: Path) -> tuple:
    st = os.lstat(path)
    return oct(st.st_mode & 0o7777), st.st_mtime_ns


def only_statesync_files(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root) if not n.startswith(".statesync-"))


def manifest_paths(data: Data, record=None) -> list[str]:
    return [e.path for e in data.repo.manifest(record or data.repo.head().record).entries]


@pytest.fixture
def source(consul, prefix, tmp_path) -> Data:
    data = Data(consul, prefix, tmp_path / "data")
    data_tree(data.root)
    return data


# -- backup and restore of the named subtrees -----------------------------------------------

def test_backup_with_roots_holds_both_subtrees_and_restore_brings_them_back_byte_identical(source, consul, prefix,
                                                                                         tmp_path):
    source.run("backup", check=True)
    paths = manifest_paths(source)
    assert "etc/icinga2/constants.conf" in paths and "var/lib/icinga2/ca/ca.crt" in paths
    assert {"etc", "var", "var/lib"} <= set(paths)
    assert not [p for p in paths if p.startswith(BESIDE + ("var/lib/icinga2/api/log",))], paths
    target = Data(consul, prefix, tmp_path / "rebuilt")
    target.root.mkdir()
    out = target.run("restore", check=True).stdout
    assert "restored snapshot" in out
    for rel in SUBTREES:
        assert subtree(target.root, rel) == subtree(source.root, rel), rel
    for rel in ("etc", "var", "var/lib"):
        assert meta(target.root / rel) == meta(source.root / rel), rel
    assert only_statesync_files(target.root) == ["etc", "var"]
    assert os.listdir(target.root / "var") == ["lib"] and os.listdir(target.root / "var/lib") == ["icinga2"]
    assert (target.root / "etc/icinga2/features-enabled/api.conf").read_text().startswith("object ApiListener")


def test_one_snapshot_record_covers_both_subtrees_and_restoring_that_id_gives_both(source, consul, prefix, tmp_path):
    source.run("backup", check=True)
    (source.root / "etc/icinga2/zones.conf").write_text("changed later\n")
    (source.root / "var/lib/icinga2/icinga2.state").write_bytes(b"changed later")
    source.run("backup", check=True)
    first, second = sorted(source.repo.records(), key=lambda r: r.created)
    assert second.id == source.repo.head().record.id
    target = Data(consul, prefix, tmp_path / "rebuilt")
    target.run("restore", "--snapshot", first.id, check=True)
    assert (target.root / "etc/icinga2/zones.conf").read_text().startswith("object Zone")
    assert (target.root / "var/lib/icinga2/icinga2.state").read_bytes() != b"changed later"
    assert (target.root / "var/lib/icinga2/ca/ca.crt").exists()


def test_backup_refuses_a_named_root_that_does_not_exist_naming_it_and_commits_nothing(consul, prefix, tmp_path):
    # It exited 0 with a snapshot lacking the subtree: a restore of it would bring back the
    # state without its config (or, for state, a master without its CA).
    data = Data(consul, prefix, tmp_path / "data")
    (data.root / "var/lib/icinga2/certs").mkdir(parents=True)
    (data.root / "var/lib/icinga2/certs/master1.crt").write_text("node certificate")
    (data.root / "var/log/icinga2").mkdir(parents=True)
    proc = data.run("backup")
    assert proc.returncode == 1
    assert plain_lines(proc.stderr) == [f"statesync: error: roots: config (etc/icinga2) does not exist in "
                                        f"{data.root}; nothing committed"]
    assert data.repo.records() == []
    (data.root / "etc/icinga2").mkdir(parents=True)
    (data.root / "etc/icinga2/zones.conf").write_text("zones")
    data.run("backup", check=True)
    assert {"etc/icinga2/zones.conf", "var/lib/icinga2/certs/master1.crt"} <= set(manifest_paths(data))


@pytest.mark.parametrize("secret", ["etc/icinga2/constants.conf", "etc/icinga2/conf.d/api-users.conf"])
def test_a_config_secret_without_an_encryption_key_is_refused_naming_it_unless_plaintext_is_allowed(
        consul, prefix, tmp_path, secret):
    data = Data(consul, prefix, tmp_path / "data", plain=False)
    data_tree(data.root, keys=False)
    if secret.endswith("api-users.conf"):
        (data.root / "etc/icinga2/constants.conf").unlink()  # else refused first, being read first
    proc = data.run("backup")
    assert proc.returncode == PlaintextSecret(secret).exit_code
    lines = plain_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"statesync: error: {secret} "), proc.stderr
    assert data.repo.records() == []
    data.plain = True
    data.run("backup", check=True)
    assert secret in manifest_paths(data)


def test_constants_conf_with_a_key_is_stored_sealed_and_the_ticket_salt_never_reaches_consul(consul, prefix,
                                                                                             tmp_path):
    key = tmp_path / "key"
    Data(consul, prefix, tmp_path / "data", plain=False).run("keygen", "--out", str(key), check=True)
    data = Data(consul, prefix, tmp_path / "data", key=key, plain=False)
    data_tree(data.root)
    data.run("backup", check=True)
    by_path = data.repo.manifest(data.repo.head().record).by_path()
    for rel in ("etc/icinga2/constants.conf", "etc/icinga2/conf.d/api-users.conf", "var/lib/icinga2/ca/ca.key"):
        assert by_path[rel].sealed, rel
    assert not by_path["etc/icinga2/zones.conf"].sealed
    for digest in by_path["etc/icinga2/constants.conf"].chunks:
        stored = data.store.get(data.cfg.layout.chunk(digest)).value
        assert SALT.encode() not in stored and b"TicketSalt" not in stored
    everything = b"".join(p.value or b"" for p in data.store.get_prefix(data.cfg.layout.node_root))
    assert SALT.encode() not in everything and b"api-pw-31337" not in everything
    target = Data(consul, prefix, tmp_path / "rebuilt", key=key, plain=False)
    target.run("restore", check=True)
    assert (target.root / "etc/icinga2/constants.conf").read_bytes() == (
        data.root / "etc/icinga2/constants.conf").read_bytes()


# -- restore touches the named subtrees and nothing else ------------------------------------

def test_restore_force_moves_only_the_named_subtrees_aside_and_leaves_var_log_untouched(source, consul, prefix,
                                                                                     tmp_path):
    source.run("backup", check=True)
    target = Data(consul, prefix, tmp_path / "target")
    (target.root / "etc/icinga2").mkdir(parents=True)
    (target.root / "etc/icinga2/constants.conf").write_text("const TicketSalt = \"a newer one\"\n")
    (target.root / "var/lib/icinga2/certs").mkdir(parents=True)
    (target.root / "var/lib/icinga2/certs/new.crt").write_text("what icinga2 node setup made")
    (target.root / "var/log/icinga2").mkdir(parents=True)
    (target.root / "var/log/icinga2/icinga2.log").write_text("log of the run since the rebuild\n")
    (target.root / "keep.txt").write_text("not statesync's")
    beside = {rel: tree_state(target.root / rel) for rel in ("var/log",)}
    beside_meta = {rel: meta(target.root / rel) for rel in ("var/log", "var/log/icinga2", "keep.txt")}
    refused = target.run("restore")
    assert refused.returncode == 1 and "--force" in refused.stderr
    out = target.run("restore", "--force", check=True).stdout
    assert "previous content moved to" in out
    for rel in SUBTREES:
        assert subtree(target.root, rel) == subtree(source.root, rel), rel
    assert {rel: tree_state(target.root / rel) for rel in ("var/log",)} == beside
    assert {rel: meta(target.root / rel) for rel in beside_meta} == beside_meta
    assert (target.root / "keep.txt").read_text() == "not statesync's"
    [aside] = (target.root / ".statesync-aside").iterdir()
    assert (aside / "etc/icinga2/constants.conf").read_text() == "const TicketSalt = \"a newer one\"\n"
    assert (aside / "var/lib/icinga2/certs/new.crt").read_text() == "what icinga2 node setup made"
    assert not (aside / "var/log").exists() and not (aside / "keep.txt").exists()


def _staged(source: Data, consul, prefix, scratch: Path) -> Path:
    """A staging directory exactly as a restore writes it: the whole snapshot's tree."""
    Data(consul, prefix, scratch, roots="").run("restore", check=True)
    (scratch / ".statesync-ready").unlink()
    return scratch


@pytest.mark.parametrize("command", [("restore", "--if-empty"), ("backup",)])
def test_a_restore_killed_mid_swap_of_nested_names_is_rolled_forward_by_the_next_command(
        source, consul, prefix, tmp_path, command):
    source.run("backup", check=True)
    target = Data(consul, prefix, tmp_path / "target")
    root = target.root
    (root / "etc/icinga2").mkdir(parents=True)
    (root / "etc/icinga2/old.conf").write_text("before the restore")
    (root / "var/log/icinga2").mkdir(parents=True)
    (root / "var/log/icinga2/icinga2.log").write_text("log")
    staging = root / ".statesync-staging-killed"
    os.rename(_staged(source, consul, prefix, tmp_path / "scratch"), staging)
    aside = root / ".statesync-aside/20261201T150000Z"
    aside.mkdir(parents=True)
    made = [{"path": p, "mode": os.lstat(staging / p).st_mode & 0o7777, "uid": os.getuid(), "gid": os.getgid(),
             "mtime_ns": os.lstat(staging / p).st_mtime_ns} for p in ("var/lib",)]
    (root / JOURNAL).write_text(json.dumps({"staging": staging.name, "aside": str(aside.relative_to(root)),
                                            "old": ["etc/icinga2"], "new": list(SUBTREES), "made": made}))
    # killed after the old config went aside and the new config came in; var/lib never made
    (aside / "etc").mkdir()
    os.rename(root / "etc/icinga2", aside / "etc/icinga2")
    os.rename(staging / "etc/icinga2", root / "etc/icinga2")
    log_before = tree_state(root / "var/log")
    target.run(*command, check=True)
    for rel in SUBTREES:
        assert subtree(root, rel) == subtree(source.root, rel), rel
    assert meta(root / "var/lib") == meta(source.root / "var/lib")
    assert (aside / "etc/icinga2/old.conf").read_text() == "before the restore"
    assert not (root / JOURNAL).exists() and not staging.exists()
    assert tree_state(root / "var/log") == log_before
    if command == ("backup",):
        paths = manifest_paths(source)
        assert "var/lib/icinga2/ca/ca.crt" in paths and "etc/icinga2/old.conf" not in paths


# -- an empty volume with nothing to restore: the entrypoint's paths stay absent ------------

def test_restore_if_empty_on_an_empty_volume_without_a_snapshot_creates_no_etc_or_var(consul, prefix, tmp_path):
    data = Data(consul, prefix, tmp_path / "data")
    data.root.mkdir()
    out = data.run("restore", "--if-empty", check=True).stdout
    assert "nothing restored" in out
    assert only_statesync_files(data.root) == []
    assert (data.root / ".statesync-ready").exists()


def test_restore_if_empty_restores_beside_var_log_left_on_the_volume(source, consul, prefix, tmp_path):
    source.run("backup", check=True)
    target = Data(consul, prefix, tmp_path / "target")
    (target.root / "var/log/icinga2").mkdir(parents=True)
    (target.root / "var/log/icinga2/icinga2.log").write_text("log")
    target.run("restore", "--if-empty", check=True)
    for rel in SUBTREES:
        assert subtree(target.root, rel) == subtree(source.root, rel), rel
    assert (target.root / "var/log/icinga2/icinga2.log").read_text() == "log"
    assert not (target.root / ".statesync-aside").exists()


def test_the_master_sidecar_start_on_an_empty_volume_without_a_snapshot_creates_no_etc_or_var(consul, prefix,
                                                                                              tmp_path):
    data = Data(consul, prefix, tmp_path / "data")
    data.root.mkdir()
    sidecar = data.sidecar(tmp_path / "sidecar.log")
    try:
        wait_for(lambda: (data.root / ".statesync-ready").exists() or not sidecar.alive(), 30,
                 what="the ready marker", details=lambda: (tmp_path / "sidecar.log").read_text()[-2000:])
        assert sidecar.alive(), (tmp_path / "sidecar.log").read_text()[-2000:]
    finally:
        assert sidecar.stop() == 0
    assert only_statesync_files(data.root) == []


def test_the_master_sidecar_start_restores_both_subtrees_into_an_empty_volume(source, consul, prefix, tmp_path):
    source.run("backup", check=True)
    target = Data(consul, prefix, tmp_path / "target")
    target.root.mkdir()
    log = tmp_path / "sidecar.log"
    sidecar = target.sidecar(log)
    try:
        wait_for(lambda: (target.root / ".statesync-ready").exists() or not sidecar.alive(), 30,
                 what="the ready marker", details=lambda: log.read_text()[-2000:])
        assert sidecar.alive(), log.read_text()[-2000:]
        assert json.loads((target.root / ".statesync-ready").read_text())["action"] == "restored"
    finally:
        assert sidecar.stop() == 0
    for rel in SUBTREES:
        assert subtree(target.root, rel) == subtree(source.root, rel), rel


# -- the sidecar watches the named subtrees only --------------------------------------------

def test_the_sidecar_with_roots_ignores_log_writes_and_commits_a_config_write(source, tmp_path):
    log = tmp_path / "sidecar.log"
    sidecar = source.sidecar(log)
    try:
        wait_for(lambda: '"event": "mirroring"' in log.read_text() and source.repo.head().record is not None, 30,
                 what="the first commit", details=lambda: log.read_text()[-2000:])
        # The first commit's own events settle: no new commit over two looks a second apart
        # (on a loaded machine this only waits longer).
        seen = [-1, -2]
        wait_for(lambda: seen.append(log.read_text().count('"event": "committed"')) or seen[-1] == seen[-2] == seen[-3],
                 120, step=1.0, what="the first commits to settle")
        head = source.repo.head().record.id
        committed = log.read_text().count('"event": "committed"')
        with open(source.root / "var/log/icinga2/icinga2.log", "a") as fh:
            for i in range(200):
                fh.write(f"[information] line {i}\n")
                fh.flush()
                if i % 20 == 0:
                    time.sleep(0.05)
        (source.root / "var/cache/icinga2/y").write_text("more cache")
        time.sleep(2.0)  # debounce 0.1 s, max_wait 0.5 s: a scan would have run and committed by now
        assert source.repo.head().record.id == head
        assert log.read_text().count('"event": "committed"') == committed
        (source.root / "etc/icinga2/zones.conf").write_text("object Zone \"master\" { }\n")
        wait_for(lambda: source.repo.head().record.id != head, 120, what="a commit of the config change",
                 details=lambda: log.read_text()[-2000:])
        entry = source.repo.manifest(source.repo.head().record).by_path()["etc/icinga2/zones.conf"]
        assert entry.size == len("object Zone \"master\" { }\n")
    finally:
        assert sidecar.stop() == 0
    assert not [p for p in manifest_paths(source) if p.startswith(BESIDE)]


def test_the_daemons_watch_drops_events_outside_the_named_subtrees(tmp_path):
    from watchdog.events import DirModifiedEvent, FileCreatedEvent, FileModifiedEvent

    from statesync.sidecar.changes import Changes
    cfg = config.load({"node": "n1", "root": str(tmp_path), "roots": ROOTS}, env={})
    changes = Changes(str(tmp_path), cfg)
    for event in (FileModifiedEvent(f"{tmp_path}/var/log/icinga2/icinga2.log"),
                  FileCreatedEvent(f"{tmp_path}/var/cache/icinga2/x"),
                  FileModifiedEvent(f"{tmp_path}/var/lib/icinga2/api/log/current"),
                  FileCreatedEvent(f"{tmp_path}/other")):
        changes.on_any_event(event)
    assert changes.take() == set()
    for event in (FileModifiedEvent(f"{tmp_path}/etc/icinga2/zones.conf"),
                  DirModifiedEvent(f"{tmp_path}/var/lib"),
                  FileModifiedEvent(f"{tmp_path}/var/lib/icinga2/icinga2.state")):
        changes.on_any_event(event)
    assert changes.take() == {"etc/icinga2/zones.conf", "var/lib", "var/lib/icinga2/icinga2.state"}


def test_the_master_sidecar_with_roots_publishes_the_ca_of_its_state_subtree(source, tmp_path):
    # The publisher looked for ca/ca.crt at the top of the snapshot; with roots it is
    # var/lib/icinga2/ca/ca.crt, so a master in the official image never published its CA.
    log = tmp_path / "sidecar.log"
    sidecar = source.sidecar(log)
    try:
        pair = wait_for(lambda: source.store.get(source.cfg.layout.ca), 30, "the published CA",
                        details=lambda: log.read_text()[-3000:])
    finally:
        assert sidecar.stop() == 0
    published = json.loads(pair.value)
    assert published["pem"].encode() == (source.root / "var/lib/icinga2/ca/ca.crt").read_bytes()
