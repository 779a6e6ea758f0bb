"""Many satellites enrolling at once against a real master (tests/e2e/test_e2e_icinga.Cluster):
their key material, their pending requests as Icinga 2 stores them, their registrations as the
enroller writes them, and what the master did about them. Shared by
tests/e2e/test_e2e_enrol_batch.py and bench/enrol_scale.py."""
from __future__ import annotations

import json
import os
import threading
import time
from hashlib import sha256

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from statesync.enrol import registration
from statesync.pki.fingerprint import spki_sha256

from . import icinga
from .certs import pending_request

STAGED = "accepted satellites staged"  # the master sidecar's event for each stage that went live
# Icinga 2's old process logs this once per reload (2.13 to 2.16), the stop at the end aside.
RELOAD_LINE = "Received request to shut down."
PACKAGE = "statesync-satellites"


def satellites(n: int, prefix: str = "esat") -> list[dict]:
    """N satellites' key material: a real RSA key and the self-signed certificate ``node setup``
    without a ticket makes, its request fingerprint (SHA-256 of the DER) and key hash."""
    out = []
    for i in range(n):
        cn = f"{prefix}{i:04d}"
        _key, cert = pending_request(cn)
        der = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        out.append({"cn": cn, "cert": cert, "fp": sha256(der).hexdigest(), "spki": spki_sha256(cert)})
    return out


def write_requests(c, sats: list[dict]) -> None:
    """Each request as Icinga 2 stores it on the master (``<fingerprint>.json``), owned and moded
    like the request the cluster's real satellite left there."""
    d = c.master.lib / "certificate-requests"
    model = next(d.glob("*.json")).stat()
    for s in sats:
        path = d / f"{s['fp']}.json"
        path.write_text(json.dumps({"cert_request": s["cert"].decode(), "ticket": ""}, separators=(",", ":")))
        os.chown(path, model.st_uid, model.st_gid)
        path.chmod(model.st_mode & 0o777)


def documents(c, sats: list[dict], zones: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    """Each satellite's (key, registration) as its enroller writes it: under the master's CA, in
    the zone of its own name unless ``zones`` names another."""
    zones = zones or {}
    ca = spki_sha256(c.master.ca_cert().read_bytes())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    return [(f"{c.prefix}/satellites/{s['cn']}", registration.encode(registration.Registration(
        cn=s["cn"], zone=zones.get(s["cn"], s["cn"]), parent_zone=c.master.zone, key_sha256=s["spki"], request_sha256=s["fp"],
        ca_spki_sha256=ca, node=s["cn"], time=stamp))) for s in sats]


def register(c, sats: list[dict], writers: int = 1, gap: float = 0.0, zones: dict[str, str] | None = None) -> float:
    """Write the registrations: ``writers`` threads released together, each writing its share
    ``gap`` seconds apart (fewer threads than satellites: every writer here has the one loopback
    address, and Consul refuses more than ``http_max_conns_per_client``, 200 by default, from
    one). Returns the monotonic time of the release; raises when one was not written."""
    docs = documents(c, sats, zones)
    writers = max(1, min(writers, len(docs)))
    gate = threading.Barrier(writers + 1)
    failed: list[str] = []

    def put(share):
        store = c.store()
        gate.wait(60)
        for i, (key, doc) in enumerate(share):
            if i and gap:
                time.sleep(gap)
            try:
                store.put(key, doc)
            except Exception as exc:  # reported below, after every writer is done
                failed.append(f"{key}: {exc}")

    threads = [threading.Thread(target=put, args=(docs[i::writers],), daemon=True) for i in range(writers)]
    for t in threads:
        t.start()
    gate.wait(60)
    t0 = time.monotonic()
    for t in threads:
        t.join(120)
    if failed:
        raise RuntimeError(f"{len(failed)} registrations not written, e.g. {failed[0]}")
    return t0


def in_package(c) -> set[str] | None:
    """The endpoints Icinga 2 runs from the package; None while its API does not answer (a reload)."""
    try:
        res = c.api.get("/v1/objects/endpoints?attrs=package", timeout=5)["results"]
    except Exception:  # the API drops out while Icinga 2 reloads
        return None
    return {r["name"] for r in res if r["attrs"].get("package") == PACKAGE}


def signed(c, fps: set[str]) -> int:
    """How many of the requests ``fps`` carry a certificate on the master."""
    return sum(1 for fp, doc in icinga.request_files(c.master).items() if fp in fps and doc.get("cert_response"))


def reloads(c) -> int:
    """The reloads in the master's Icinga 2 logs so far."""
    return sum(p.read_text(errors="replace").count(RELOAD_LINE) for p in c.master.dir("log").glob("icinga2.log*"))


def stages(c) -> list[list[str]]:
    """The satellites of each stage the master's sidecar activated, in order."""
    return [list(e.get("satellites", [])) for e in c.master_sidecar.events(STAGED)]
