"""One rule for symlinked roots, in backup, run and restore alike (docs/FORMAT.md, "Several roots").

The official icinga/icinga2 image (2.16 on) has /var/lib/icinga2 -> /data/var/lib/icinga2 and
/etc/icinga2 -> /data/etc/icinga2. With root = / (the image's own tree) and the usual roots, the
named roots are symlinks into one volume: statesync follows them, resolved once at the start, and
works in that volume as if root = /data had been set. Named roots that lead anywhere else are a
configuration error (one line, exit 2) for every command; a named root that is missing when a
snapshot would be committed commits nothing. Real `statesync` processes against a real Consul.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from statesync import config

from ..support import clean_env, plain_lines, run_statesync, tree_state, wait_for
from .test_named_roots import ROOTS, SUBTREES, Data, data_tree, manifest_paths, subtree

pytestmark = pytest.mark.consul


def image(top: Path, absolute: bool = True) -> Path:
    """The image's own tree at ``top``: the volume at top/data, and the two Icinga 2 directories
    as the image has them, symlinks into it (absolute, as the image's, or relative). Returns the volume."""
    volume = top / "data"
    volume.mkdir(parents=True)
    for rel in SUBTREES:
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(volume / rel if absolute else os.path.relpath(volume / rel, (top / rel).parent), top / rel)
    return volume


def links(top: Path) -> dict:
    return {rel: os.readlink(top / rel) for rel in SUBTREES}


@pytest.mark.parametrize("absolute", [True, False], ids=["absolute-links", "relative-links"])
def test_named_roots_that_are_symlinks_into_one_volume_are_backed_up_and_restored_there(consul, prefix, tmp_path,
                                                                                         absolute):
    # Before, backup exited 0 with a snapshot holding var/lib/icinga2 as a symlink and no CA, and
    # restore refused the very same layout.
    top = tmp_path / "image"
    volume = image(top, absolute)
    data_tree(volume)
    source = Data(consul, prefix, top)
    source.run("backup", check=True)
    paths = manifest_paths(source)
    assert "var/lib/icinga2/ca/ca.crt" in paths and "etc/icinga2/constants.conf" in paths
    assert source.cfg.root == volume
    assert "etc/icinga2/features-enabled/api.conf" in paths  # a symlink inside stays one
    by_path = source.repo.manifest(source.repo.head().record).by_path()
    assert by_path["etc/icinga2/features-enabled/api.conf"].type == "l"
    assert by_path["var/lib/icinga2"].type == "d"
    assert not [n for n in os.listdir(top) if n.startswith(".statesync-")]  # its files live in the volume

    rebuilt = tmp_path / "rebuilt"
    empty = image(rebuilt, absolute)  # a new container: the image's links, an empty volume
    before = links(rebuilt)
    target = Data(consul, prefix, rebuilt)
    out = target.run("restore", "--if-empty", check=True).stdout
    assert "restored snapshot" in out
    assert links(rebuilt) == before
    for rel in SUBTREES:
        assert subtree(empty, rel) == subtree(volume, rel), rel
    assert (empty / ".statesync-ready").exists()
    assert sorted(n for n in os.listdir(rebuilt) if not n.startswith(".statesync-")) == ["data", "etc", "var"]
    assert not [n for n in os.listdir(rebuilt) if n.startswith(".statesync-")]

    # The same snapshot restores into the volume mounted as root = /data, as the sidecar sees it.
    plain = Data(consul, prefix, tmp_path / "sidecar-view")
    plain.run("restore", check=True)
    for rel in SUBTREES:
        assert subtree(plain.root, rel) == subtree(volume, rel), rel


def test_the_master_sidecar_with_symlinked_named_roots_commits_the_ca_and_publishes_it(consul, prefix, tmp_path):
    # Before, the sidecar committed snapshots without the CA and never published one, exiting 0 at SIGTERM.
    top = tmp_path / "image"
    volume = image(top)
    data_tree(volume)
    source = Data(consul, prefix, top)
    log = tmp_path / "sidecar.log"
    sidecar = source.sidecar(log)
    try:
        pair = wait_for(lambda: source.store.get(source.cfg.layout.ca), 120, "the published CA",
                        details=lambda: log.read_text()[-3000:])
    finally:
        assert sidecar.stop() == 0
    assert json.loads(pair.value)["pem"].encode() == (volume / "var/lib/icinga2/ca/ca.crt").read_bytes()
    assert "var/lib/icinga2/ca/ca.crt" in manifest_paths(source)


def _elsewhere(top: Path) -> None:
    """The volume holds the config, but the state link leads to a directory of another name."""
    volume = top / "data"
    data_tree(volume)
    (top / "etc").mkdir()
    os.symlink(volume / "etc/icinga2", top / "etc/icinga2")
    (top / "var/lib").mkdir(parents=True)
    os.rename(volume / "var/lib/icinga2", volume / "var/lib/icinga2-state")
    os.symlink(volume / "var/lib/icinga2-state", top / "var/lib/icinga2")


@pytest.mark.parametrize("command", [("backup",), ("restore", "--if-empty"), ("restore", "--force"),
                                     ("run", "--role", "master")])
def test_a_named_root_that_leads_elsewhere_is_one_line_and_exit_2_for_backup_restore_and_run(consul, prefix,
                                                                                            tmp_path, command):
    top = tmp_path / "image"
    _elsewhere(top)
    good = Data(consul, prefix, tmp_path / "good")
    data_tree(good.root)
    good.run("backup", check=True)  # a snapshot a restore could take
    head = good.repo.head().record.id
    before = tree_state(top)
    env = clean_env()  # not Data: its settings would not load here
    env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(top), STATESYNC_ROOTS=ROOTS,
               STATESYNC_NODE="master1", STATESYNC_LOG_FORMAT="json", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    # Bounded: before, `run` mirrored the broken layout until stopped.
    proc = run_statesync(command, env, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = plain_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("statesync: error: roots: state ("), proc.stderr
    assert "leads to" in lines[0] and "var/lib/icinga2-state" in lines[0]
    assert tree_state(top) == before
    assert good.repo.head().record.id == head
    assert not [n for n in os.listdir(top) if n.startswith(".statesync-")]


def test_named_roots_leading_into_two_directories_are_refused_naming_both(tmp_path):
    # The settings alone decide it, before any command touches anything.
    (tmp_path / "a/var/lib/icinga2").mkdir(parents=True)
    (tmp_path / "b/etc/icinga2").mkdir(parents=True)
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    os.symlink(tmp_path / "a/var/lib/icinga2", tmp_path / "var/lib/icinga2")
    os.symlink(tmp_path / "b/etc/icinga2", tmp_path / "etc/icinga2")
    with pytest.raises(config.ConfigError, match="different directories") as exc:
        config.load({"node": "n1", "root": str(tmp_path), "roots": ROOTS}, env={})
    assert f"state into {tmp_path}/a" in str(exc.value) and f"config into {tmp_path}/b" in str(exc.value)


def test_a_symlinked_root_without_roots_is_followed_and_resolved_once(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    cfg = config.load({"node": "n1", "root": str(tmp_path / "link")}, env={})
    assert cfg.root == tmp_path / "real" and cfg.ready_file == tmp_path / "real/.statesync-ready"


def test_the_sidecar_commits_nothing_while_the_state_root_is_missing_and_both_once_it_is_there(consul, prefix,
                                                                                              tmp_path):
    # Before, the sidecar committed a snapshot without var/lib/icinga2 (no CA) and went on.
    # At the image's first start the entrypoint makes the roots after statesync's readiness: wait.
    source = Data(consul, prefix, tmp_path / "data")
    (source.root / "etc/icinga2").mkdir(parents=True)
    (source.root / "etc/icinga2/zones.conf").write_text("zones")
    log = tmp_path / "sidecar.log"
    sidecar = source.sidecar(log)
    try:
        wait_for(lambda: "waiting for the named roots" in log.read_text() or not sidecar.alive(), 120,
                 what="the sidecar waiting for var/lib/icinga2", details=lambda: log.read_text()[-2000:])
        assert sidecar.alive(), log.read_text()[-2000:]
        assert "state (var/lib/icinga2) does not exist" in log.read_text()
        assert source.repo.head().record is None
        staging = tmp_path / "staging"
        data_tree(staging)
        os.makedirs(source.root / "var/lib")
        os.rename(staging / "var/lib/icinga2", source.root / "var/lib/icinga2")
        wait_for(lambda: source.repo.head().record is not None, 120, what="the first commit",
                 details=lambda: log.read_text()[-2000:])
        # A named root gone while running (an unmounted volume, an rm) is waited for again.
        os.rename(source.root / "etc/icinga2", tmp_path / "away")
        wait_for(lambda: log.read_text().count("waiting for the named roots") == 2, 120,
                 what="the sidecar waiting for etc/icinga2", details=lambda: log.read_text()[-2000:])
        assert "config (etc/icinga2) does not exist" in log.read_text()
        assert sidecar.alive()
    finally:
        assert sidecar.stop() == 0
    records = source.repo.records()
    assert records and all({"var/lib/icinga2/ca/ca.crt", "etc/icinga2/zones.conf"} <= set(manifest_paths(source, r))
                           for r in records)


def test_absent_names_each_named_root_a_manifest_lacks_or_holds_as_no_directory():
    from statesync.snapshot.manifest import Entry, Manifest
    from statesync.tree.roots import absent
    roots = (("config", "etc/icinga2"), ("state", "var/lib/icinga2"))
    entries = (Entry("etc", "d", 0o755, 0, 0, 1), Entry("etc/icinga2", "l", 0o777, 0, 0, 1, target="/x"),
               Entry("var", "d", 0o755, 0, 0, 1))
    assert absent(Manifest(entries), roots) == ["config (etc/icinga2) is a symlink, not a directory",
                                                "state (var/lib/icinga2) does not exist"]
    whole = entries[:1] + (Entry("etc/icinga2", "d", 0o755, 0, 0, 1),) + entries[2:] + (
        Entry("var/lib", "d", 0o755, 0, 0, 1), Entry("var/lib/icinga2", "d", 0o755, 0, 0, 1))
    assert absent(Manifest(whole), roots) == [] and absent(Manifest(), ()) == []
