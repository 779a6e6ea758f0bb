"""Trees of every shape come back from `statesync backup` / `statesync restore` as they were:
any depth, paths beyond PATH_MAX, the root directory's own metadata, hard links. Against
the real Consul agent, through the command line."""
from __future__ import annotations

import hashlib
import os
import resource
import stat
import subprocess
from pathlib import Path

import pytest

from statesync.snapshot import manifest as mf
from statesync.tree.scan import ScanResult

from ..sidecar import statesync_env
from ..support import plain_lines, statesync_cmd

pytestmark = pytest.mark.consul


def _few_descriptors() -> None:
    # A walk that held one descriptor per level would run out of them in a deep tree.
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def run(consul, prefix, root, *args, check=True, **extra):
    proc = subprocess.run(statesync_cmd(*args), env=statesync_env(f"http://{consul.addr}", prefix, root, **extra), capture_output=True,
                          text=True, timeout=120, preexec_fn=_few_descriptors)
    if check and proc.returncode != 0:
        raise AssertionError(f"statesync {args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def remove(path: Path) -> None:
    """rm -rf: Python's own rmtree recurses, and a thousand levels exceed its stack."""
    subprocess.run(["rm", "-rf", str(path)], check=True, timeout=60)


@pytest.fixture
def base(tmp_path):
    yield tmp_path
    remove(tmp_path)


def make_chain(root: Path, names: list[str], leaf: str, content: bytes) -> None:
    """Directories ``names`` nested in that order under ``root``, a file ``leaf`` at the bottom;
    made by descriptor, so that no path the OS sees is longer than one name."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            os.mkdir(name, 0o750, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        out = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, dir_fd=fd)
        os.write(out, content)
        os.utime(out, ns=(1_600_000_000_123_456_789,) * 2)
        os.close(out)
    finally:
        os.close(fd)


def tree(root: Path) -> dict:
    """Every path below ``root`` (but statesync's own) with its type, mode, mtime and content
    or target, read by descriptor and without recursion: fit for any depth and path length."""
    out: dict[str, tuple] = {}
    todo = [("", os.open(root, os.O_RDONLY | os.O_DIRECTORY))]
    while todo:
        rel, fd = todo.pop()
        try:
            for d in sorted(os.scandir(fd), key=lambda d: d.name):
                if not rel and d.name.startswith(".statesync-"):
                    continue
                path = f"{rel}/{d.name}" if rel else d.name
                st = d.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    out[path] = ("d", oct(stat.S_IMODE(st.st_mode)), st.st_mtime_ns)
                    todo.append((path, os.open(d.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)))
                elif stat.S_ISLNK(st.st_mode):
                    out[path] = ("l", os.readlink(d.name, dir_fd=fd), st.st_mtime_ns)
                else:
                    f = os.open(d.name, os.O_RDONLY, dir_fd=fd)
                    with os.fdopen(f, "rb") as fh:
                        out[path] = ("f", oct(stat.S_IMODE(st.st_mode)), st.st_mtime_ns, fh.read())
        finally:
            os.close(fd)
    return out


def round_trip(consul, prefix, base: Path, root: Path) -> Path:
    """Back ``root`` up, restore it into a fresh directory, return that directory."""
    out = run(consul, prefix, root, "backup").stdout
    assert out.startswith("snapshot "), out
    target = base / "restored"
    run(consul, prefix, target, "restore")
    return target


def test_a_tree_three_hundred_directories_deep_backs_up_and_restores_byte_for_byte(consul, prefix, base):
    root = base / "root"
    root.mkdir()
    make_chain(root, [f"level{i}" for i in range(300)], "bottom.conf", b"object Host \"deep\" {}\n")
    target = round_trip(consul, prefix, base, root)
    assert tree(target) == tree(root)
    assert len(tree(target)) == 301


def test_a_tree_a_thousand_directories_deep_backs_up_and_restores_byte_for_byte(consul, prefix, base):
    root = base / "root"
    root.mkdir()
    make_chain(root, ["d"] * 1000, "bottom", os.urandom(70_000))
    (root / "beside").write_bytes(b"a sibling at the top")
    target = round_trip(consul, prefix, base, root)
    assert tree(target) == tree(root)
    assert len(tree(target)) == 1002


def test_a_path_longer_than_path_max_backs_up_and_restores(consul, prefix, base):
    root = base / "root"
    root.mkdir()
    names = [f"{i:02d}-" + "n" * 250 for i in range(24)]  # 24 names of 253 bytes: over 6,000 bytes
    make_chain(root, names, "leaf.txt", b"far down")
    target = round_trip(consul, prefix, base, root)
    restored = tree(target)
    assert restored == tree(root)
    deepest = max(restored, key=len)
    assert len(str(target / deepest).encode()) > 4096 and deepest.endswith("/leaf.txt")


def test_the_root_directory_s_own_mode_and_mtime_come_back(consul, prefix, base):
    root = base / "root"
    root.mkdir()
    (root / "zones.conf").write_text("object Zone \"master\" {}\n")
    os.chmod(root, 0o750)
    os.utime(root, ns=(1_650_000_000_987_654_321,) * 2)
    # The readiness marker is written into --root by default, which sets its mtime after the
    # restore; here it goes elsewhere, so that the root is as the restore left it.
    target = base / "restored"
    run(consul, prefix, root, "backup")
    target.mkdir(mode=0o700)  # an existing, empty root: its metadata is the snapshot's afterwards
    run(consul, prefix, target, "restore", STATESYNC_READY_FILE=str(base / "ready"))
    st = os.stat(target)
    assert oct(stat.S_IMODE(st.st_mode)) == "0o750"
    assert st.st_mtime_ns == 1_650_000_000_987_654_321


def test_hard_linked_files_come_back_as_one_file_with_two_links(consul, prefix, base):
    root = base / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a/ca.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\n" * 100)
    os.link(root / "a/ca.crt", root / "b/trusted-parent.crt")
    (root / "plain").write_bytes(b"-----BEGIN CERTIFICATE-----\n" * 100)  # same bytes, not a link
    target = round_trip(consul, prefix, base, root)
    assert tree(target) == tree(root)
    first, second, plain = (os.stat(target / p) for p in ("a/ca.crt", "b/trusted-parent.crt", "plain"))
    assert first.st_ino == second.st_ino
    assert first.st_nlink == second.st_nlink == 2
    assert plain.st_ino != first.st_ino and plain.st_nlink == 1


def test_a_name_the_os_refuses_fails_the_restore_with_one_line_naming_it(consul, prefix, base, make_cfg, repo_for):
    cfg = make_cfg()
    repo = repo_for(cfg)
    data = b"content"
    digest = hashlib.sha256(data).hexdigest()
    long_name = "x" * 300  # Linux refuses names over 255 bytes
    manifest = mf.Manifest((
        mf.Entry("ok", mf.DIR, 0o755, 0, 0, 1),
        mf.Entry(f"ok/{long_name}", mf.FILE, 0o644, 0, 0, 1, size=len(data), sha256=digest, chunks=(digest,)),
    ))
    repo.commit(ScanResult(manifest, {digest: data}), repo.head(), set())
    target = base / "restored"
    target.mkdir()
    proc = run(consul, prefix, target, "restore", check=False)
    assert proc.returncode == 1
    lines = plain_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("statesync: error: ")
    assert "File name too long" in lines[0] and f"ok/{long_name}" in lines[0]
    assert os.listdir(target) == [] or all(n.startswith(".statesync-") for n in os.listdir(target))


def test_a_directory_the_os_will_not_let_backup_read_fails_it_with_one_line_naming_it(consul, prefix):
    import tempfile
    nobody = 65534
    base = Path(tempfile.mkdtemp(prefix="statesync-unreadable-"))
    try:
        os.chmod(base, 0o755)
        root = base / "root"
        make_chain(root.parent, ["root", "zones.d"], "host.conf", b"object Host \"h\" {}\n")
        (root / "private").mkdir(mode=0o000)
        subprocess.run(["chown", "-R", f"{nobody}:{nobody}", str(root)], check=True)
        proc = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
                               *statesync_cmd("backup")], env=statesync_env(f"http://{consul.addr}", prefix, root), capture_output=True,
                              text=True, timeout=120, cwd="/")
        assert proc.returncode == 1, proc.stderr
        lines = plain_lines(proc.stderr)
        assert lines == ["statesync: error: cannot read private: Permission denied"]
    finally:
        remove(base)


def test_a_staging_tree_a_thousand_levels_deep_is_cleaned_up_without_recursion(tmp_path):
    from statesync.restore.apply import _remove_tree
    staging = tmp_path / ".statesync-staging-deep"
    staging.mkdir()
    fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(1100):
            (Path(f"/proc/self/fd/{fd}") / "f").write_text(str(level))
            os.symlink("f", "link", dir_fd=fd)
            os.mkdir("d", dir_fd=fd)
            deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
    finally:
        os.close(fd)
    outside = tmp_path / "outside"
    outside.write_text("never followed")
    os.symlink(outside, staging / "escape")
    _remove_tree(staging)
    assert not staging.exists()
    assert outside.read_text() == "never followed"
