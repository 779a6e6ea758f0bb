"""The CA guard end to end: `statesync run --role master` publishing its CA and
`statesync run --role satellite` reacting, as real processes against the real Consul."""
from __future__ import annotations

import json
import statistics
import subprocess
import time

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.errors import EXIT_RESTART
from statesync.pki import cadoc, fingerprint

from ..certs import CERT_FILES, enrol, make_ca, renew
from ..guardkit import fired, publish, quarantines, satellite_env
from ..sidecar import Sidecar
from ..support import clean_env, statesync_cmd, wait_for

pytestmark = pytest.mark.consul

ROUNDS = 10
# Only to stop a hang: a loaded machine may take this long for what takes a second here.
PATIENCE = 60


def _store(addr: str, prefix: str) -> tuple[Store, str]:
    cfg = config.load({"prefix": prefix, "node": "x", "consul.addr": [addr]}, env={})
    return Store(cfg.consul), cfg.layout.ca


def _checked(sidecar: Sidecar, published_cert: str) -> list[dict]:
    return [e for e in sidecar.events("CA check") if e.get("published_ca_cert_sha256") == published_cert]


def test_each_new_ca_key_is_quarantined_and_the_trigger_fired_once(consul, prefix, tmp_path):
    # How fast is bench/run.py's "guard reaction" (docs/BENCH.md); here the outcome of each round,
    # and the reaction times printed for a look.
    root, marker = tmp_path / "root", tmp_path / "fired"
    store, key = _store(consul.addr, prefix)
    ca = make_ca()
    enrol(root, ca)
    publish(store, key, ca)
    sat = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-sat1.log", "sat1", "satellite", **satellite_env(marker, STATESYNC_GUARD_PURGE_WINDOW="0"))
    latencies = []
    try:
        wait_for(lambda: _checked(sat, fingerprint.cert_sha256(ca.pem)), PATIENCE, what="satellite started", step=0.01)
        for i in range(ROUNDS):
            files = enrol(root, ca)  # (re-)enrolled with the CA now published
            new = make_ca()
            time.sleep(0.1)
            started = time.monotonic()
            publish(store, key, new)
            wait_for(lambda: fired(marker) >= i + 1, PATIENCE, step=0.005, what=f"round {i}: trigger fired")
            latencies.append(time.monotonic() - started)
            assert fired(marker) == i + 1, f"round {i}: the trigger fired more than once"
            qdir = quarantines(root)[-1]
            assert len(quarantines(root)) == i + 1
            for name, data in files.items():
                assert (qdir / name).read_bytes() == data, f"round {i}: {name}"
            ca = new
    finally:
        assert sat.stop() == 0
    p99 = sorted(latencies)[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"guard reaction over {ROUNDS} runs: p50={statistics.median(latencies):.3f}s "
          f"p99={p99:.3f}s max={max(latencies):.3f}s (not a pass mark)")
    out = sat.events()
    assert len([e for e in out if e.get("event") == "restart triggered"]) == ROUNDS


def test_a_master_renewing_its_ca_leaves_the_satellite_alone_and_a_new_master_key_purges_it(consul, prefix, tmp_path):
    master_root, sat_root, marker = tmp_path / "master" / "root", tmp_path / "sat" / "root", tmp_path / "fired"
    master_root.mkdir(parents=True)
    (master_root / "ca").mkdir()
    ca = make_ca()
    (master_root / "ca/ca.crt").write_bytes(ca.pem)
    (master_root / "ca/ca.key").write_bytes(b"key material stays on the master")
    files = enrol(sat_root, ca)
    store, key = _store(consul.addr, prefix)
    master = Sidecar.start(consul.addr, prefix, master_root, master_root.parent / "sidecar-master1.log", "master1", "master")
    sat = None
    try:
        doc = wait_for(lambda: store.get(key), PATIENCE, step=0.05, what="CA published by the master")
        assert cadoc.decode(doc.value).spki_sha256 == fingerprint.spki_sha256(ca.pem)
        assert json.loads(doc.value)["node"] == "master1"
        sat = Sidecar.start(consul.addr, prefix, sat_root, sat_root.parent / "sidecar-sat1.log", "sat1", "satellite", **satellite_env(marker))
        wait_for(lambda: _checked(sat, fingerprint.cert_sha256(ca.pem)), PATIENCE, what="satellite matched", step=0.01)

        renewed = renew(ca)
        (master_root / "ca/ca.crt").write_bytes(renewed.pem)
        wait_for(lambda: _checked(sat, fingerprint.cert_sha256(renewed.pem)), PATIENCE, what="renewal seen", step=0.01)
        assert store.get(key).modify_index > doc.modify_index
        time.sleep(1.5)  # confirmations would have run, and a periodic check
        assert quarantines(sat_root) == [] and fired(marker) == 0
        assert all((sat_root / "certs" / n).exists() for n in CERT_FILES)
        assert {e["verdict"] for e in _checked(sat, fingerprint.cert_sha256(renewed.pem))} == {"renewed-same-key"}
        assert any(e.get("event", "").startswith("CA certificate renewed") for e in master.events())

        # A new key is published only once an operator accepts it (statesync accept-ca).
        new = make_ca()
        (master_root / "ca/ca.crt").write_bytes(new.pem)
        wait_for(lambda: any(e.get("event", "").startswith("CA conflict") for e in master.events()), PATIENCE,
                 what="the master refusing to publish an unaccepted key", step=0.01)
        assert fired(marker) == 0
        env = clean_env()
        env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(master_root),
                   STATESYNC_NODE="master1")
        subprocess.run(statesync_cmd("accept-ca", "--yes", "--reason", "test"), env=env, check=True,
                       capture_output=True, timeout=60)
        wait_for(lambda: fired(marker) == 1, PATIENCE, what="satellite purged", step=0.01)
        [qdir] = quarantines(sat_root)
        assert {n: (qdir / n).read_bytes() for n in files} == files
        assert any(e.get("event", "").startswith("CA key changed as accepted") for e in master.events())
    finally:
        assert master.stop() == 0
        if sat is not None:
            assert sat.stop() == 0


def test_the_exit_trigger_ends_the_satellite_sidecar_with_exit_code_3(consul, prefix, tmp_path):
    root = tmp_path / "root"
    store, key = _store(consul.addr, prefix)
    ca = make_ca()
    enrol(root, ca)
    publish(store, key, ca)
    env = satellite_env(tmp_path / "unused", STATESYNC_GUARD_TRIGGER="exit")
    sat = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-sat1.log", "sat1", "satellite", **env)
    try:
        wait_for(lambda: _checked(sat, fingerprint.cert_sha256(ca.pem)), PATIENCE, what="satellite matched", step=0.01)
        publish(store, key, make_ca())
        assert sat.proc.wait(PATIENCE) == EXIT_RESTART == 3
    finally:
        sat.stop()
    [qdir] = quarantines(root)
    assert sorted(p.name for p in qdir.iterdir() if p.name.endswith((".crt", ".key", ".csr", "ticket"))) == \
        sorted(CERT_FILES)
    assert any(e.get("event") == "restart triggered" for e in sat.events())


def test_check_ca_exits_0_on_a_match_or_renewal_1_on_a_mismatch_and_2_when_it_cannot_tell(consul, prefix, tmp_path):
    root = tmp_path / "root"
    store, key = _store(consul.addr, prefix)
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=consul.addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root), STATESYNC_NODE="sat1")

    def check_ca(addr=None):
        e = dict(env, CONSUL_HTTP_ADDR=addr) if addr else env
        done = subprocess.run(statesync_cmd("check-ca"), env=e, capture_output=True, text=True, timeout=30)
        return done.returncode, done.stdout

    ca = make_ca()
    enrol(root, ca)
    assert check_ca()[0] == 2  # nothing published
    publish(store, key, ca)
    code, out = check_ca()
    spki = fingerprint.spki_sha256(ca.pem)
    assert code == 0 and out.count(spki) == 2 and "result:    match" in out
    publish(store, key, renew(ca))
    assert check_ca()[0] == 0
    new = make_ca()
    publish(store, key, new)
    code, out = check_ca()
    assert code == 1 and spki in out and fingerprint.spki_sha256(new.pem) in out and "mismatch" in out
    from ..support import free_ports
    code, out = check_ca(f"127.0.0.1:{free_ports(1)[0]}")
    assert code == 2 and spki in out and "Consul" in out
    assert all((root / "certs" / n).exists() for n in CERT_FILES)  # check-ca never purges
