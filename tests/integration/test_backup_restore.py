"""Backup and restore against the real Consul agent."""
from __future__ import annotations

import subprocess

import pytest

from statesync.consul.store import Store

from ..sidecar import statesync_env
from ..support import clean_env, make_tree, statesync_cmd, tree_state

pytestmark = pytest.mark.consul


def run(consul, prefix, root, *args, node="node1", check=True):
    proc = subprocess.run(statesync_cmd(*args), env=statesync_env(f"http://{consul.addr}", prefix, root, node), capture_output=True,
                          text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"statesync {args} exited {proc.returncode}: {proc.stderr}")
    return proc


def test_a_mixed_tree_survives_backup_wipe_and_restore_byte_for_byte(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    before = tree_state(root)
    out = run(consul, prefix, root, "backup").stdout
    assert out.startswith("snapshot ")
    subprocess.run(["rm", "-rf", str(root)], check=True)
    run(consul, prefix, root, "restore")
    assert tree_state(root) == before


def test_a_second_backup_of_an_unchanged_tree_writes_nothing(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    run(consul, prefix, root, "backup")
    out = run(consul, prefix, root, "backup").stdout
    assert out.startswith("unchanged")


def test_restore_into_a_non_empty_root_is_refused_and_touches_nothing(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    run(consul, prefix, root, "backup")
    before = tree_state(root)
    proc = run(consul, prefix, root, "restore", check=False)
    assert proc.returncode == 1
    assert "not empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert tree_state(root) == before


def test_snapshots_lists_the_kept_snapshots_newest_last_and_prunes_past_keep(consul, prefix, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for i in range(4):
        (root / "f").write_text(str(i))
        run(consul, prefix, root, "backup", "--keep", "3")
    import json
    listed = json.loads(run(consul, prefix, root, "snapshots", "--json").stdout)
    assert len(listed) == 3
    assert [s["id"] for s in listed] == sorted(s["id"] for s in listed)
    text = run(consul, prefix, root, "snapshots").stdout
    assert listed[-1]["id"] in text


def test_restore_of_an_unknown_node_fails_with_one_line_and_exit_1(consul, prefix, tmp_path):
    proc = run(consul, prefix, tmp_path / "root", "restore", node="nobody", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "has no snapshot" in proc.stderr
    assert not (tmp_path / "root").exists()


def test_restore_with_consul_unreachable_fails_cleanly(tmp_path):
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR="127.0.0.1:1", STATESYNC_ROOT=str(tmp_path / "root"))
    proc = subprocess.run(statesync_cmd("restore", "--node", "x"), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Consul unreachable" in proc.stderr
    assert not (tmp_path / "root").exists()


def test_a_corrupted_chunk_fails_the_restore_before_anything_is_written(consul, prefix, tmp_path, make_cfg, repo_for):
    root = tmp_path / "root"
    make_tree(root)
    run(consul, prefix, root, "backup")
    cfg = make_cfg()
    repo = repo_for(cfg)
    digest = sorted(repo.refs(repo.record()) - set(repo.record().manifest_chunks))[0]
    Store(cfg.consul).put(cfg.layout.chunk(digest), b"tampered")
    subprocess.run(["rm", "-rf", str(root)], check=True)
    proc = run(consul, prefix, root, "restore", check=False)
    assert proc.returncode == 1
    assert "sha256" in proc.stderr
    assert not root.exists()


def test_a_bad_config_value_names_the_setting_and_exits_2(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('keep = "many"\n')
    proc = subprocess.run(statesync_cmd("snapshots", "--config", str(cfg)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "statesync: error: keep: expected a number, got 'many'"


def test_include_and_exclude_patterns_choose_what_goes_into_the_snapshot(consul, prefix, tmp_path):
    root = tmp_path / "root"
    make_tree(root)
    (root / "api/log").mkdir(parents=True)
    (root / "api/log/current").write_text("replay log")
    (root / "icinga2.state.tmp").write_text("half written")
    run(consul, prefix, root, "backup", "--include", "ca/**", "--include", "certs/*.crt", "--include", "api/**")
    target = tmp_path / "target"
    run(consul, prefix, target, "restore")
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*")
                   if not p.is_dir() and not p.name.startswith(".statesync-"))
    assert files == ["api/zones/master/_etc/größe-ünïcødé.conf", "ca/ca.crt", "ca/ca.key",
                     "certs/ca-link.crt", "certs/node.crt"]
