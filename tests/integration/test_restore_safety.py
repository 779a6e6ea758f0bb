"""The disaster path: restore options, master start-up rules, and failures that leave --root untouched."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo
from statesync.snapshot import chunking
from statesync.snapshot.record import Record, new_id

from ..sidecar import Sidecar, statesync_env
from ..support import plain_lines, run_statesync, statesync_cmd, tree_state

pytestmark = pytest.mark.consul


def make_ca_pem(cn: str = "Icinga CA") -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def spki(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return chunking.sha256(der)


def icinga_tree(root: Path) -> bytes:
    crt, key = make_ca_pem()
    (root / "ca").mkdir(parents=True)
    (root / "certs").mkdir()
    (root / "ca/ca.crt").write_bytes(crt)
    (root / "ca/ca.key").write_bytes(key)
    os.chmod(root / "ca/ca.key", 0o600)
    (root / "certs/master1.crt").write_text("node certificate")
    (root / "icinga2.state").write_bytes(os.urandom(5000))
    return crt


class Env:
    def __init__(self, consul, prefix, root: Path, node="master1"):
        self.addr, self.prefix, self.root, self.node = consul.addr, prefix, root, node
        self.cfg = config.load({"prefix": prefix, "node": node, "consul.addr": [consul.addr], "root": str(root)},
                               env={})
        self.repo = Repo(Store(self.cfg.consul), self.cfg.layout, self.cfg.chunk_size, self.cfg.keep)

    def env(self, **extra) -> dict:
        return statesync_env(self.addr, self.prefix, self.root, self.node, **extra)

    def run(self, *args, check=False, **extra) -> subprocess.CompletedProcess:
        return run_statesync(args, self.env(**extra), check)

    def publish_manifest(self, entries: list, raw: bytes | None = None) -> str:
        """Commit a hand-made manifest (bypassing every check of the writer) as the head."""
        blob = raw if raw is not None else zlib.compress(json.dumps({"v": 1, "e": entries}).encode())
        digest = chunking.sha256(blob)
        store, layout = self.repo.store, self.cfg.layout
        store.put(layout.chunk(digest), blob)
        rec = Record(id=new_id(), node=self.node, created="now", files=1, dirs=0, symlinks=0, bytes=1,
                     manifest_chunks=(digest,), manifest_sha256=digest, manifest_size=len(blob))
        store.put(layout.snapshot(rec.id), rec.encode())
        head = store.get(layout.head)
        store.put(layout.head, rec.encode(), cas=head.modify_index if head else 0)
        return rec.id


def _one_error_line(proc) -> str:
    # Log events (a retry's warning, say) may come before it; the failure itself is one line.
    lines = [ln for ln in plain_lines(proc.stderr) if not _log_event(ln)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("statesync: error: ")
    return lines[0]


def _log_event(line: str) -> bool:
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return isinstance(doc, dict) and "level" in doc and "event" in doc


@pytest.fixture
def env(consul, prefix, tmp_path):
    return Env(consul, prefix, tmp_path / "root")


def _file_entry(path, data=b"x"):
    d = chunking.sha256(data)
    return {"p": path, "t": "f", "m": 0o644, "u": 0, "g": 0, "mt": 0, "s": len(data), "h": d}


# -- master start-up ----------------------------------------------------------------------

def test_the_sidecar_restores_a_wiped_master_before_it_signals_ready(env, tmp_path):
    crt = icinga_tree(env.root)
    env.run("backup", check=True)
    subprocess.run(["rm", "-rf", str(env.root)], check=True)
    assert env.run("ready").returncode == 1
    sidecar = Sidecar(env.env(), env.root.parent / "sidecar.log")
    try:
        ready = env.root / ".statesync-ready"
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and sidecar.alive(), "never became ready"
            time.sleep(0.01)
        # the instant the marker exists, the CA is already back
        assert spki((env.root / "ca/ca.crt").read_bytes()) == spki(crt)
        assert (env.root / "ca/ca.key").stat().st_mode & 0o777 == 0o600
        assert env.run("ready").returncode == 0
    finally:
        code = sidecar.stop(120)
    out = sidecar.output()
    assert code == 0, out
    assert '"action": "restored"' in out


def test_a_master_holding_a_different_ca_refuses_to_start_and_changes_nothing(env):
    icinga_tree(env.root)
    env.run("backup", check=True)
    head_before = env.repo.store.get(env.cfg.layout.head)
    published = spki(env.repo.manifest(env.repo.head().record) and _snapshot_ca(env))
    fresh, _ = make_ca_pem("a fresh CA")
    (env.root / "ca/ca.crt").write_bytes(fresh)
    local_before = tree_state(env.root)
    proc = subprocess.run(statesync_cmd("run", "--role", "master"), env=env.env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert spki(fresh) in proc.stdout and published in proc.stdout  # the log names both
    assert spki(fresh) in proc.stderr and published in proc.stderr  # and so does the error line
    assert tree_state(env.root) == local_before
    assert env.repo.store.get(env.cfg.layout.head) == head_before
    assert not (env.root / ".statesync-ready").exists()


def _snapshot_ca(env) -> bytes:
    from statesync.restore.startup import snapshot_ca
    return snapshot_ca(env.repo, env.repo.head().record)


def test_on_conflict_restore_moves_the_local_state_aside_and_brings_back_the_published_ca(env):
    crt = icinga_tree(env.root)
    env.run("backup", check=True)
    fresh, _ = make_ca_pem("a fresh CA")
    (env.root / "ca/ca.crt").write_bytes(fresh)
    from statesync.restore.startup import prepare
    outcome = prepare(env.repo, env.root, "master", "restore")
    assert outcome.action == "restored"
    assert (env.root / "ca/ca.crt").read_bytes() == crt
    aside = list((env.root / ".statesync-aside").glob("*/ca/ca.crt"))
    assert [p.read_bytes() for p in aside] == [fresh]


def test_on_conflict_keep_local_leaves_both_alone_at_start(env):
    icinga_tree(env.root)
    env.run("backup", check=True)
    fresh, _ = make_ca_pem("a fresh CA")
    (env.root / "ca/ca.crt").write_bytes(fresh)
    from statesync.restore.startup import prepare
    assert prepare(env.repo, env.root, "master", "keep-local").action == "kept-local"
    assert (env.root / "ca/ca.crt").read_bytes() == fresh


def _publish_ca(env, pem: bytes, node: str) -> None:
    from statesync.pki import cadoc
    env.repo.store.put(env.cfg.layout.ca, cadoc.encode(cadoc.from_pem(pem, "t", node, "s")))


def test_a_master_with_no_snapshot_of_its_own_refuses_a_ca_other_than_the_published_one(env):
    from statesync.errors import CaConflict
    from statesync.restore.startup import prepare
    published, _ = make_ca_pem("the fleet's CA")
    _publish_ca(env, published, "master1")
    fresh = icinga_tree(env.root)  # e.g. a mistyped --node on a freshly set up master
    before = tree_state(env.root)
    for on_conflict in ("refuse", "restore"):
        with pytest.raises(CaConflict) as err:
            prepare(env.repo, env.root, "master", on_conflict)
        assert spki(fresh) in str(err.value) and spki(published) in str(err.value)
    assert "no snapshot to restore" in str(err.value)
    assert tree_state(env.root) == before
    assert prepare(env.repo, env.root, "master", "keep-local").action == "kept-local"


def test_a_master_on_a_prefix_with_nothing_published_and_no_snapshot_is_a_fresh_install(env):
    from statesync.restore.startup import prepare
    icinga_tree(env.root)
    assert prepare(env.repo, env.root, "master").action == "nothing-to-restore"


def test_a_master_matching_its_own_snapshot_still_refuses_when_another_key_is_published(env):
    from statesync.errors import CaConflict
    from statesync.restore.startup import prepare
    crt = icinga_tree(env.root)
    env.run("backup", check=True)
    other, _ = make_ca_pem("published by another master")
    _publish_ca(env, other, "master2")
    with pytest.raises(CaConflict) as err:
        prepare(env.repo, env.root, "master")
    assert spki(crt) in str(err.value) and spki(other) in str(err.value) and "master2" in str(err.value)


# -- restore options ----------------------------------------------------------------------

def test_force_moves_the_current_content_aside_before_restoring(env):
    icinga_tree(env.root)
    env.run("backup", check=True)
    snap = tree_state(env.root)
    (env.root / "local-only").write_text("precious")
    (env.root / "icinga2.state").write_text("newer local state")
    assert "not empty" in _one_error_line(env.run("restore"))
    proc = env.run("restore", "--force", check=True)
    assert "moved to" in proc.stdout
    assert tree_state(env.root) == snap
    aside = next((env.root / ".statesync-aside").iterdir())
    assert (aside / "local-only").read_text() == "precious"
    assert (aside / "icinga2.state").read_text() == "newer local state"


def test_dry_run_lists_additions_changes_and_removals_and_writes_nothing(env):
    icinga_tree(env.root)
    env.run("backup", check=True)
    (env.root / "certs/master1.crt").write_text("changed")
    (env.root / "extra").write_text("x")
    os.unlink(env.root / "icinga2.state")
    before = tree_state(env.root)
    proc = env.run("restore", "--dry-run")
    assert proc.returncode == 1, proc.stderr  # diff(1)'s codes: something would change
    out = proc.stdout
    assert "add    icinga2.state" in out
    assert "change certs/master1.crt" in out
    assert "remove extra" in out
    assert "nothing written" in out
    assert tree_state(env.root) == before


def test_if_empty_restores_an_empty_root_and_leaves_a_populated_one_alone(env):
    icinga_tree(env.root)
    env.run("backup", check=True)
    snap = tree_state(env.root)
    assert "nothing restored" in env.run("restore", "--if-empty", check=True).stdout
    subprocess.run(["rm", "-rf", str(env.root / "ca"), str(env.root / "certs")], check=True)
    env.run("restore", "--if-empty", check=True)
    assert tree_state(env.root) == snap
    assert (env.root / ".statesync-ready").exists()


def image_defaults(root: Path) -> None:
    """What the official Icinga 2 image from 2.16 on puts under /data/var/lib/icinga2 ("make
    install" of Icinga's Containerfile), which the engine copies into an empty volume: empty
    certs/ and certificate-requests/, api/ with empty log/, zones/ and zones-stage/."""
    for d in ("certs", "certificate-requests", "api/log", "api/zones", "api/zones-stage"):
        (root / d).mkdir(parents=True, exist_ok=True)


def test_a_root_holding_only_the_2_16_images_defaults_is_restored_at_start_with_the_defaults_aside(env):
    # Before: an empty certs/ passed for Icinga 2 state, the sidecar restored nothing
    # ("matched"/"no-ca") and node setup made a new CA on the master.
    crt = icinga_tree(env.root)
    env.run("backup", check=True)
    subprocess.run(["rm", "-rf", str(env.root)], check=True)
    image_defaults(env.root)
    from statesync.restore.startup import prepare
    outcome = prepare(env.repo, env.root, "master")
    assert outcome.action == "restored"
    assert spki((env.root / "ca/ca.crt").read_bytes()) == spki(crt)
    assert (env.root / "certs/master1.crt").read_text() == "node certificate"
    aside = list((env.root / ".statesync-aside").iterdir())
    assert len(aside) == 1 and (aside[0] / "api/zones-stage").is_dir() and (aside[0] / "certs").is_dir()


def test_if_empty_restores_over_the_2_16_images_defaults_and_leaves_a_started_node_alone(env):
    icinga_tree(env.root)
    env.run("backup", check=True)
    snap = tree_state(env.root)
    subprocess.run(["rm", "-rf", str(env.root)], check=True)
    image_defaults(env.root)
    out = env.run("restore", "--if-empty", check=True).stdout
    assert "restored snapshot" in out and "moved to" in out
    assert tree_state(env.root) == snap
    # A node that has begun (node setup's key in certs/) is state, however little.
    subprocess.run(["rm", "-rf", str(env.root)], check=True)
    image_defaults(env.root)
    (env.root / "certs/satellite1.key").write_text("pending request's key")
    assert "nothing restored" in env.run("restore", "--if-empty", check=True).stdout
    assert (env.root / "certs/satellite1.key").exists() and not (env.root / "ca").exists()


def test_if_empty_leaves_a_node_whose_certificates_the_guard_quarantined_to_enrol_again(env):
    # The guard empties certs/ into its quarantine and a Swarm task restarts through
    # `restore --if-empty` before it enrols again: the old CA's certificates must stay away.
    icinga_tree(env.root)
    env.run("backup", check=True)
    quarantine = env.root / ".statesync-quarantine/20261207T070000Z"
    quarantine.mkdir(parents=True)
    for name in ("ca", "certs"):
        for f in (env.root / name).iterdir():
            f.rename(quarantine / f.name)
    (env.root / "ca").rmdir()
    assert "nothing restored" in env.run("restore", "--if-empty", check=True).stdout
    assert list((env.root / "certs").iterdir()) == []


def test_if_empty_with_no_snapshot_yet_succeeds_doing_nothing(consul, prefix, tmp_path):
    e = Env(consul, prefix, tmp_path / "root", node="brand-new")
    proc = e.run("restore", "--if-empty", check=True)
    assert "no snapshot" in proc.stdout


def test_restore_of_another_node_and_of_an_older_snapshot(env, consul, prefix, tmp_path):
    icinga_tree(env.root)
    env.run("backup", check=True)
    first = env.repo.head().record.id
    (env.root / "icinga2.state").write_text("second")
    env.run("backup", check=True)
    other = Env(consul, prefix, tmp_path / "rebuilt", node="master1-new")
    other.run("restore", "--node", "master1", "--snapshot", first, check=True)
    assert (other.root / "icinga2.state").read_bytes() != b"second"
    assert (other.root / "ca/ca.crt").read_bytes() == (env.root / "ca/ca.crt").read_bytes()


def test_an_interrupted_swap_is_rolled_forward_by_the_next_run(env):
    from statesync.restore.apply import JOURNAL, recover
    root = env.root
    root.mkdir()
    (root / "old").write_text("old")
    staging = root / ".statesync-staging-abcd"
    (staging / "new").mkdir(parents=True)
    (staging / "new/file").write_text("new")
    aside = root / ".statesync-aside/t1"
    aside.mkdir(parents=True)
    (root / JOURNAL).write_text(json.dumps({"staging": staging.name, "aside": ".statesync-aside/t1",
                                            "old": ["old"], "new": ["new"]}))
    assert recover(root)
    assert (root / "new/file").read_text() == "new"
    assert (aside / "old").read_text() == "old"
    assert not (root / "old").exists() and not staging.exists() and not (root / JOURNAL).exists()


# -- failures leave --root untouched -------------------------------------------------------

def _populated(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mine").write_text("the user's own file")
    return tree_state(root)


def test_consul_unreachable_gives_one_line_and_leaves_the_root_untouched(env):
    before = _populated(env.root)
    proc = env.run("restore", "--force", CONSUL_HTTP_ADDR="127.0.0.1:1")
    assert proc.returncode == 1
    assert "Consul unreachable" in _one_error_line(proc)
    assert tree_state(env.root) == before


def test_no_snapshot_for_the_node_gives_one_line_and_leaves_the_root_untouched(env):
    before = _populated(env.root)
    proc = env.run("restore", "--force", "--node", "ghost")
    assert proc.returncode == 1
    assert "has no snapshot" in _one_error_line(proc)
    assert tree_state(env.root) == before


def test_a_corrupted_chunk_gives_one_line_and_leaves_the_root_untouched(env, consul, prefix, tmp_path):
    src = Env(consul, prefix, tmp_path / "src")
    icinga_tree(src.root)
    src.run("backup", check=True)
    rec = src.repo.head().record
    victim = sorted(src.repo.refs(rec) - set(rec.manifest_chunks))[0]
    src.repo.store.put(src.cfg.layout.chunk(victim), b"bit rot")
    before = _populated(env.root)
    proc = env.run("restore", "--force", "--node", "master1")
    assert proc.returncode == 1
    assert "sha256" in _one_error_line(proc)
    assert tree_state(env.root) == before


@pytest.mark.parametrize("raw, message", [
    (zlib.compress(b'{"v":1,"e":[')[:-4], "truncated"),
    (b"not zlib at all", "not valid compressed JSON"),
    (zlib.compress(b'{"v":1,"e":[{"p":"a","t":"f"}]}'), "bad sha256"),
    (zlib.compress(b'{"v":99,"e":[]}'), "unknown format version"),
])
def test_a_malformed_manifest_gives_one_line_and_leaves_the_root_untouched(env, raw, message):
    env.publish_manifest([], raw=raw)
    before = _populated(env.root)
    proc = env.run("restore", "--force")
    assert proc.returncode == 1
    assert message in _one_error_line(proc)
    assert tree_state(env.root) == before


@pytest.mark.parametrize("entries, message", [
    ([_file_entry("../escaped")], "escapes the root"),
    ([_file_entry("/tmp/statesync-absolute-escape")], "is absolute"),
    ([{"p": "link", "t": "l", "m": 0o777, "u": 0, "g": 0, "mt": 0, "l": "/tmp"}, _file_entry("link/escaped")],
     "through the symlink"),
])
def test_a_manifest_path_escaping_the_root_is_refused_before_any_write(env, tmp_path, entries, message):
    env.publish_manifest(entries)
    before = _populated(env.root)
    proc = env.run("restore", "--force")
    assert proc.returncode == 1
    assert message in _one_error_line(proc)
    assert tree_state(env.root) == before
    assert not (env.root.parent / "escaped").exists()
    assert not Path("/tmp/statesync-absolute-escape").exists()
    assert not Path("/tmp/escaped").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_a_full_disk_during_the_restore_gives_one_line_and_leaves_the_root_untouched(env, consul, prefix, small_tmpfs, tmp_path):
    src = Env(consul, prefix, tmp_path / "src")
    icinga_tree(src.root)
    (src.root / "big").write_bytes(os.urandom(3 * 1024 * 1024))
    src.run("backup", check=True)
    target = Env(consul, prefix, small_tmpfs)  # --root is the mount point itself, as with a volume
    before = _populated(target.root)
    proc = target.run("restore", "--force")
    assert proc.returncode == 1
    assert "no space left on device" in _one_error_line(proc)
    assert tree_state(target.root) == before
    assert [p.name for p in target.root.iterdir()] == ["mine"]
