"""A restore leaves nothing of its own behind: no staging directory after a success, no empty
aside directory after a failure. Real `statesync` processes against a real Consul; the full disk
is a real tmpfs with few inodes, mounted here and unmounted afterwards."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ..support import tree_state
from .test_restore_safety import Env, _one_error_line, _populated, icinga_tree

pytestmark = pytest.mark.consul


def own_files(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if n.startswith(".statesync-"))


@pytest.mark.parametrize("via", ["--root", "--target"])
def test_a_restore_into_a_symlinked_root_or_target_leaves_no_staging_directory_behind(consul, prefix, tmp_path, via):
    # Before, the clean-up opened the root's path without following its symlink, failed silently
    # and left the (emptied) .statesync-staging-* directory in the real directory.
    src = Env(consul, prefix, tmp_path / "src")
    icinga_tree(src.root)
    src.run("backup", check=True)
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    if via == "--root":
        Env(consul, prefix, tmp_path / "link").run("restore", check=True)
        expected = [".statesync-ready"]
    else:
        src.run("restore", "--include", "ca", "--target", str(tmp_path / "link"), check=True)
        expected = []
        assert sorted(os.listdir(real)) == ["ca"]
    assert (real / "ca/ca.crt").read_bytes() == (src.root / "ca/ca.crt").read_bytes()
    assert own_files(real) == expected
    assert os.path.islink(tmp_path / "link")


@pytest.fixture
def few_inodes(tmp_path):
    """A tmpfs whose inodes, not its bytes, run out: each attempt can be given one more."""
    mnt = tmp_path / "few-inodes"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=64", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_each_disk_full_restore_force_leaves_the_root_as_it_was_without_an_aside_directory(consul, prefix, few_inodes,
                                                                                            tmp_path):
    # Before, the swap made .statesync-aside/<time>/ before it wrote its journal: a full disk
    # there failed the restore (one line, root untouched) but left that empty directory, one
    # per attempt. Each attempt here has one inode more than the last, so the disk fills up at
    # every step of the restore in turn: staging, the journal, the aside directory, the swap.
    src = Env(consul, prefix, tmp_path / "src")
    icinga_tree(src.root)
    src.run("backup", check=True)
    entries = len(src.repo.manifest(src.repo.head().record).entries)
    target = Env(consul, prefix, few_inodes)
    _populated(target.root)
    filler = few_inodes / "filler"
    filler.mkdir()
    spare = 2 + entries  # the lock file, the staging directory and all but one entry of the snapshot
    n = 0
    while os.statvfs(few_inodes).f_ffree > spare:
        (filler / str(n)).touch()
        n += 1
    assert os.statvfs(few_inodes).f_ffree == spare
    before = tree_state(target.root)
    failures = 0
    for attempt in range(12):
        proc = target.run("restore", "--force")
        if proc.returncode == 0:
            break
        failures += 1
        assert proc.returncode == 1
        assert "no space left on device" in _one_error_line(proc), attempt
        assert tree_state(target.root) == before, attempt
        assert own_files(target.root) == [], (attempt, own_files(target.root))
        n -= 1
        (filler / str(n)).unlink()  # one inode more for the next attempt
        before = tree_state(target.root)
    else:
        pytest.fail("restore --force never succeeded with ever more inodes")
    assert failures >= 3, failures  # it failed in staging, at the journal and at the aside directory
    assert (target.root / "ca/ca.crt").read_bytes() == (src.root / "ca/ca.crt").read_bytes()
    [aside] = (target.root / ".statesync-aside").iterdir()
    assert (aside / "mine").read_text() == "the user's own file"
    assert (aside / "filler").is_dir()


def test_a_top_level_symlink_whose_target_is_no_usable_path_restores_as_it_was(consul, prefix, tmp_path):
    # The swap asked "is it there?" by following the link: a target name over NAME_MAX raised
    # "File name too long" and the whole restore failed, where the link is data like any other.
    src = Env(consul, prefix, tmp_path / "src")
    icinga_tree(src.root)
    target = "t" * 300
    os.symlink(target, src.root / "long-link")
    src.run("backup", check=True)
    dst = Env(consul, prefix, tmp_path / "dst")
    dst.run("restore", check=True)
    assert os.readlink(dst.root / "long-link") == target
    assert (dst.root / "ca/ca.crt").read_bytes() == (src.root / "ca/ca.crt").read_bytes()
