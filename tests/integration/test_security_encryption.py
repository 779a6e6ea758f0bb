"""Client-side encryption: private keys never reach Consul in plain text."""
from __future__ import annotations

import base64
import os
import stat
import subprocess

import pytest

from statesync.consul.store import Store
from statesync.errors import CorruptData, PlaintextSecret
from statesync.snapshot import crypto
from statesync.tree.sealing import Sealing

from ..support import tree_state
from .test_restore_safety import Env, icinga_tree, make_ca_pem

# -- pure ------------------------------------------------------------------------------

def test_a_sealed_chunk_opens_with_the_same_key_node_and_address():
    s = crypto.Sealer(crypto.generate_key())
    addr = s.address(b"secret")
    assert s.open("n1", addr, s.seal("n1", addr, b"secret")) == b"secret"


def test_a_sealed_chunk_moved_to_another_address_or_node_fails_authentication():
    s = crypto.Sealer(crypto.generate_key())
    a, b = s.address(b"one"), s.address(b"two")
    blob = s.seal("n1", a, b"one")
    with pytest.raises(CorruptData, match="authentication"):
        s.open("n1", b, blob)
    with pytest.raises(CorruptData, match="authentication"):
        s.open("n2", a, blob)


def test_a_flipped_bit_or_another_key_fails_authentication():
    s = crypto.Sealer(crypto.generate_key())
    addr = s.address(b"data")
    blob = bytearray(s.seal("n", addr, b"data"))
    blob[-1] ^= 1
    with pytest.raises(CorruptData):
        s.open("n", addr, bytes(blob))
    with pytest.raises(CorruptData):
        crypto.Sealer(crypto.generate_key()).open("n", addr, s.seal("n", addr, b"data"))


def test_keys_parse_only_in_their_own_format():
    key = crypto.generate_key()
    assert crypto.parse_key(crypto.format_key(key) + "\n") == key
    for bad in ("", "statesync-key-v1:", "statesync-key-v1:!!!", "statesync-key-v1:" + base64.b64encode(b"short").decode(),
                base64.b64encode(key).decode()):
        with pytest.raises(crypto.KeyFormatError):
            crypto.parse_key(bad)


def test_a_pem_private_key_is_recognised_whatever_the_file_is_called():
    _, key_pem = make_ca_pem()
    assert crypto.looks_like_private_key(b"junk\n" + key_pem)
    assert crypto.looks_like_private_key(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert not crypto.looks_like_private_key(b"-----BEGIN CERTIFICATE-----\n")


def test_the_sealer_never_shows_its_key():
    key = crypto.generate_key()
    s = crypto.Sealer(key)
    assert key.hex() not in repr(s) and base64.b64encode(key).decode() not in repr(s)


def test_without_a_key_a_secret_is_refused_by_name_unless_plain_text_was_allowed():
    _, key_pem = make_ca_pem()
    strict = Sealing(None, "n1", ("ca/ca.key",))
    with pytest.raises(PlaintextSecret) as info:
        strict.check_plain("ca/ca.key", b"anything")
    assert info.value.path == "ca/ca.key" and "statesync keygen --out FILE" in str(info.value)
    with pytest.raises(PlaintextSecret):
        strict.check_plain("odd.pem", key_pem)  # found by content, not by name
    assert strict.check_plain("ca/ca.crt", b"-----BEGIN CERTIFICATE-----\n") is False
    allowed = Sealing(None, "n1", ("ca/ca.key",), plaintext_allowed=True)
    assert allowed.check_plain("ca/ca.key", b"anything") is True
    assert b"anything" not in str(info.value).encode() and b"PRIVATE" not in str(info.value).encode()


# -- against Consul ----------------------------------------------------------------------

pytestmark_consul = pytest.mark.consul


def _keyfile(env: Env, name="key") -> str:
    path = env.root.parent / name
    proc = env.run("keygen", "--out", str(path))
    assert proc.returncode == 0, proc.stderr
    return str(path)


def _all_values(env: Env) -> list[bytes]:
    return [p.value for p in Store(env.cfg.consul).get_prefix(env.prefix + "/")]


@pytest.fixture
def env(consul, prefix, tmp_path):
    return Env(consul, prefix, tmp_path / "root")


@pytest.mark.consul
def test_keygen_writes_a_0600_key_and_never_overwrites_or_prints_it(env):
    path = _keyfile(env)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = open(path).read().strip()
    assert crypto.parse_key(text)
    again = env.run("keygen", "--out", path)
    assert again.returncode == 2 and "never overwrites" in again.stderr
    assert open(path).read().strip() == text


@pytest.mark.consul
def test_with_a_key_no_value_in_consul_holds_a_private_key_in_plain_text(env):
    key_file = _keyfile(env)
    icinga_tree(env.root)
    _, node_key = make_ca_pem("node")
    (env.root / "certs/master1.key").write_bytes(node_key)
    (env.root / "oddly-named.pem").write_bytes(node_key)  # found by content, not by name
    secrets = [(env.root / "ca/ca.key").read_bytes(), node_key]
    before = tree_state(env.root)
    proc = env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=key_file)
    assert proc.returncode == 0, proc.stderr
    assert "PLAIN TEXT" not in proc.stderr
    values = _all_values(env)
    assert values
    for v in values:
        assert b"PRIVATE KEY" not in v
        for secret in secrets:
            body = b"".join(secret.splitlines()[1:-1])  # the base64 of the key
            assert body[:40] not in v and secret not in v
    subprocess.run(["rm", "-rf", str(env.root)], check=True)
    assert env.run("restore", STATESYNC_ENCRYPTION_KEY_FILE=key_file).returncode == 0
    assert tree_state(env.root) == before


@pytest.mark.consul
def test_without_a_key_but_with_plain_text_allowed_the_backup_warns_loudly(env):
    icinga_tree(env.root)
    proc = env.run("backup", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    assert proc.returncode == 0
    assert "PRIVATE KEYS WILL BE STORED IN CONSUL IN PLAIN TEXT" in proc.stderr
    assert "ca/ca.key" in proc.stderr


@pytest.mark.consul
@pytest.mark.parametrize("which", ["missing", "wrong"])
def test_a_missing_or_wrong_key_gives_one_clear_line_and_writes_nothing(env, tmp_path, which):
    key_file = _keyfile(env)
    icinga_tree(env.root)
    assert env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=key_file).returncode == 0
    target = tmp_path / "target"
    extra = {} if which == "missing" else {"STATESYNC_ENCRYPTION_KEY_FILE": _keyfile(env, "other")}
    proc = env.run("restore", STATESYNC_ROOT=str(target), **extra)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert ("no encryption key is configured" if which == "missing" else "key id") in lines[0]
    assert not target.exists()


@pytest.mark.consul
def test_swapped_sealed_chunks_are_detected_before_anything_is_written(env, tmp_path):
    key_file = _keyfile(env)
    icinga_tree(env.root)
    _, node_key = make_ca_pem("node")
    (env.root / "certs/master1.key").write_bytes(node_key)
    assert env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=key_file).returncode == 0
    store = Store(env.cfg.consul)
    sealed = [p for p in store.get_prefix(env.cfg.layout.chunks) if p.value.startswith(crypto.MAGIC)]
    assert len(sealed) == 2
    a, b = sealed
    store.put(a.key, b.value)
    store.put(b.key, a.value)
    target = tmp_path / "target"
    proc = env.run("restore", STATESYNC_ROOT=str(target), STATESYNC_ENCRYPTION_KEY_FILE=key_file)
    assert proc.returncode == 1
    assert "fails authentication" in proc.stderr
    assert not target.exists()


@pytest.mark.consul
def test_encrypt_all_hides_file_names_and_contents(env):
    key_file = _keyfile(env)
    icinga_tree(env.root)
    (env.root / "zz-telltale-name.conf").write_text("telltale content")
    before = tree_state(env.root)
    assert env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=key_file, STATESYNC_ENCRYPT_ALL="true").returncode == 0
    for v in _all_values(env):
        assert b"telltale" not in v and b"BEGIN CERTIFICATE" not in v
    subprocess.run(["rm", "-rf", str(env.root)], check=True)
    assert env.run("restore", STATESYNC_ENCRYPTION_KEY_FILE=key_file).returncode == 0
    assert tree_state(env.root) == before


@pytest.mark.consul
def test_rekey_moves_every_kept_snapshot_to_the_new_key(env, tmp_path):
    old_key, new_key = _keyfile(env, "old"), _keyfile(env, "new")
    icinga_tree(env.root)
    assert env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=old_key).returncode == 0
    first = env.repo.head().record.id
    (env.root / "icinga2.state").write_text("second")
    assert env.run("backup", STATESYNC_ENCRYPTION_KEY_FILE=old_key).returncode == 0
    final = tree_state(env.root)
    proc = env.run("rekey", "--new-key-file", new_key, STATESYNC_ENCRYPTION_KEY_FILE=old_key)
    assert proc.returncode == 0, proc.stderr
    assert "re-encrypted 2 snapshot(s)" in proc.stdout
    for snap, target in ((None, tmp_path / "latest"), (first, tmp_path / "first")):
        args = ["restore"] + (["--snapshot", snap] if snap else [])
        proc = env.run(*args, STATESYNC_ROOT=str(target), STATESYNC_ENCRYPTION_KEY_FILE=new_key)
        assert proc.returncode == 0, proc.stderr
    assert tree_state(tmp_path / "latest") == final
    proc = env.run("restore", STATESYNC_ROOT=str(tmp_path / "with-old-key"), STATESYNC_ENCRYPTION_KEY_FILE=old_key)
    assert proc.returncode == 1 and "key id" in proc.stderr
