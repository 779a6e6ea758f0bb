"""The fleet's CA: ``statesync check-ca`` (the local CA against the published one, exit 0 match,
1 mismatch, 2 cannot tell; never purges) and ``statesync accept-ca`` (an operator's recorded
decision that the fleet trusts the master's local CA)."""
from __future__ import annotations

import argparse
import json
import sys

from .. import config
from ..consul.store import Store
from ..disk import CA_CERT, LOCAL_CA
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..guard import accept_ca
from ..pki import fingerprint
from ..pki.cadoc import PublishedCA


def cmd_check_ca(cfg: config.Config, args: argparse.Namespace) -> int:
    return check_ca(cfg, sys.stdout, as_json=args.json)


def check_ca(cfg: config.Config, out, as_json: bool = False) -> int:
    """Print both fingerprints and the verdict (``as_json``: one document, docs/JSON.md); return its exit code."""
    from ..guard import ca_watch
    store = Store(cfg.consul)
    d = ca_watch.check_ca(cfg, store)
    if as_json:
        p = d.published
        print(json.dumps({"local_spki_sha256": d.local_spki, "local_cert_sha256": d.local_cert,
                          "local_file": str(cfg.state_dir / LOCAL_CA), "published_spki_sha256": d.published_spki,
                          "published_cert_sha256": d.published_cert, "published_key": cfg.layout.ca,
                          "published_by": (p and p.node) or None, "published_snapshot": (p and p.snapshot) or None,
                          "published_time": (p and p.published) or None, "verdict": d.verdict.value,
                          "reason": d.reason, "exit_code": d.exit_code,
                          "history": accept_ca.history_items(cfg, store)}, indent=2), file=out)
    else:
        where = ""
        if d.published is not None:
            p = d.published
            where = f"  (by {p.node or '?'}, snapshot {p.snapshot or '?'}, published {p.published or '?'})"
        print(f"local:     {d.local_spki or '-'}  {cfg.state_dir / LOCAL_CA}", file=out)
        print(f"published: {d.published_spki or '-'}  {cfg.layout.ca}{where}", file=out)
        print(f"result:    {d.verdict.value}: {d.reason}", file=out)
        history = history_lines(cfg, store)
        if history:
            print(f"trusted before ({cfg.layout.ca_history}, newest first):", file=out)
            print("\n".join(history), file=out)
    ca_watch.log_check_ca(cfg, d)
    return d.exit_code


def history_lines(cfg: config.Config, store: Store) -> list[str]:
    """``check-ca``'s view of the CAs the fleet trusted before, newest first; [] when none or unreadable."""
    out = []
    for item in accept_ca.history_items(cfg, store):
        why = item["decision"] or "?"
        if item["operator"] or item["reason"]:
            why += f" by {item['operator'] or '?'}: {item['reason'] or ''}"
        out.append(f"  until {item['replaced'] or '?'}: {item['spki_sha256'] or '?'}  {item['subject'] or ''}"
                   f"  (by {item['node'] or '?'}; replaced: {why})")
    return out


def cmd_accept_ca(cfg: config.Config, args: argparse.Namespace) -> int:
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("accept-ca asks for confirmation on a terminal; without one, pass --yes")
    accept_ca.clean_reason(args.reason)
    store = Store(cfg.consul)
    p = accept_ca.propose(cfg, store)
    print(f"published CA ({cfg.layout.ca}):")
    print("\n".join(_describe(p.published)))
    print(f"local CA ({cfg.state_dir / CA_CERT}):")
    print("\n".join(_describe(p.local)))
    if not p.needed:
        print("the local CA has the published key already: nothing to accept")
        return EXIT_OK
    if p.pending is not None:
        print(f"replacing the pending acceptance of key {p.pending.new_spki_sha256} by {p.pending.operator}")
    if not args.yes:
        answer = input("Accept this CA for the whole fleet? Every satellite will enrol again. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not accepted; nothing written")
            return EXIT_FAILURE
    a = accept_ca.record(cfg, store, p, args.reason)
    print(f"accepted: {cfg.layout.ca_accept} records {a.old_spki_sha256 or '(none)'} -> {a.new_spki_sha256} "
          f"by {a.operator} at {a.time}; the master sidecar of node {cfg.node} publishes it on its next sync")
    return EXIT_OK


def _describe(doc: PublishedCA | None) -> list[str]:
    """Lines naming a CA: subject, public key sha256, validity, and who published it."""
    if doc is None:
        return ["  (none)"]
    cert = fingerprint.load_cert(doc.pem)
    lines = [f"  subject:        {doc.subject}",
             f"  key sha256:     {doc.spki_sha256}",
             f"  cert sha256:    {doc.cert_sha256}",
             f"  valid:          {cert.not_valid_before_utc.isoformat()} .. {cert.not_valid_after_utc.isoformat()}"]
    if doc.node or doc.published:
        lines.append(f"  published:      by {doc.node or '?'}, snapshot {doc.snapshot or '?'}, "
                     f"at {doc.published or '?'}")
    return lines
