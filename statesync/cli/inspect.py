"""The operator's read-only commands: verify, ls and nodes (their --json schemas: docs/JSON.md)."""
from __future__ import annotations

import argparse
import grp
import json
import pwd
import stat
from datetime import datetime, timezone

from .. import config
from ..errors import EXIT_FAILURE, EXIT_OK, NotFound, UsageError
from ..repo.nodes import nodes
from ..repo.verify import verify
from ..sidecar.wiring import open_repo
from ..snapshot.manifest import DIR, FILE, SYMLINK, Entry, tree_order
from ..snapshot.names import bytes_b64, escape, for_json

_TYPES = {FILE: ("file", stat.S_IFREG), DIR: ("dir", stat.S_IFDIR), SYMLINK: ("symlink", stat.S_IFLNK)}


def cmd_verify(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    if args.all:
        records = repo.records()
        head = repo.head().record
        if head is not None and head.id not in {r.id for r in records}:
            records.append(head)
        if not records:
            raise NotFound(f"node {cfg.node!r} has no snapshot under {repo.layout.node_root}")
    else:
        records = [repo.record(args.snapshot)]
    report = verify(repo, records)
    if args.json:
        print(json.dumps({"node": cfg.node, "snapshots": report.snapshots, "chunks": report.chunks,
                          "bytes": report.bytes, "whole": report.whole,
                          "damaged": [{"snapshot": d.snapshot, "path": for_json(d.path),
                                       "path_bytes_b64": bytes_b64(d.path), "reason": for_json(d.reason),
                                       "chunk": d.chunk or None} for d in report.damage]}, indent=2))
        return EXIT_OK if report.whole else EXIT_FAILURE
    for d in report.damage:
        print(f"damaged  {escape(d.snapshot)}  {escape(d.path)}: {escape(d.reason)}"
              + (f" ({escape(d.chunk[:16])}…)" if d.chunk else ""))
    which = ", ".join(report.snapshots) if len(report.snapshots) <= 3 else f"{len(report.snapshots)} snapshots"
    if report.whole:
        print(f"whole: {which} of node {cfg.node}: {report.chunks} chunks, {report.bytes} bytes checked")
        return EXIT_OK
    paths = len({(d.snapshot, d.path) for d in report.damage})
    print(f"damaged: {which} of node {cfg.node}: {paths} damaged path(s); {report.chunks} chunks checked")
    return EXIT_FAILURE


def cmd_ls(cfg: config.Config, args: argparse.Namespace) -> int:
    repo = open_repo(cfg)
    record = repo.record(args.snapshot)
    entries = sorted(repo.manifest(record).entries, key=lambda e: tree_order(e.path))
    wanted = _clean(args.path) if args.path is not None else ""
    if wanted:
        entries = [e for e in entries if e.path == wanted or e.path.startswith(wanted + "/")]
        if not entries:
            raise NotFound(f"{escape(args.path)}: not in snapshot {record.id} of node {cfg.node}")
    rows = [_row(e) for e in entries]
    if args.json:
        print(json.dumps({"node": cfg.node, "snapshot": record.id, "path": for_json(wanted or None),
                          "path_bytes_b64": bytes_b64(wanted or None), "entries": [_json_row(r) for r in rows]},
                         indent=2))
        return EXIT_OK
    for r in rows:
        names = escape(f"{r['user'] or r['uid']}:{r['group'] or r['gid']}")
        link = f" -> {escape(r['target'])}" if r["target"] is not None else ""
        print(f"{r['mode']} {r['uid']}:{r['gid']:<6} {names:<20} {r['size']:>12} {r['mtime']} {escape(r['path'])}{link}")
    return EXIT_OK


def _clean(path: str) -> str:
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"PATH: {path!r} must not contain '..'; paths are relative to the snapshot's root")
    return "/".join(parts)


def _row(e: Entry) -> dict:
    kind, bits = _TYPES[e.type]
    mtime = datetime.fromtimestamp(e.mtime_ns // 10**9, timezone.utc).isoformat(timespec="seconds")
    size = len(e.target.encode("utf-8", "surrogateescape")) if e.type == SYMLINK else e.size
    return {"path": e.path, "type": kind, "mode": stat.filemode(bits | e.mode), "mode_octal": f"{e.mode:04o}",
            "uid": e.uid, "gid": e.gid, "user": e.user or _lookup(pwd.getpwuid, e.uid),
            "group": e.group or _lookup(grp.getgrgid, e.gid), "size": size, "mtime": mtime,
            "mtime_ns": e.mtime_ns, "target": e.target if e.type == SYMLINK else None,
            "hardlink_of": e.link or None, "sealed": e.sealed}


def _json_row(r: dict) -> dict:
    """A row as docs/JSON.md gives it: each name exact when it is UTF-8, else escaped, with its bytes beside."""
    out = dict(r)
    for key in ("path", "target", "hardlink_of"):
        out[key], out[f"{key}_bytes_b64"] = for_json(r[key]), bytes_b64(r[key])
    out["user"], out["group"] = for_json(r["user"]), for_json(r["group"])
    return out


def _lookup(fn, number: int) -> str | None:
    try:
        return fn(number)[0]
    except (KeyError, OverflowError):
        return None


def cmd_nodes(cfg: config.Config, args: argparse.Namespace) -> int:
    found = nodes(open_repo(cfg).store, cfg.layout)
    if args.json:
        print(json.dumps([{"node": n.name, "role": n.role or None, "head": n.head.id if n.head else None,
                           "head_time": n.head.created if n.head else None,
                           "files": n.head.files if n.head else None, "bytes": n.head.bytes if n.head else None,
                           "snapshots": n.snapshots, "ca_spki_sha256": (n.head.ca or None) if n.head else None,
                           "problem": n.problem or None} for n in found], indent=2))
        return EXIT_OK
    if not found:
        print(f"no node has snapshots under {escape(cfg.prefix)}")
        return EXIT_OK
    print(f"{'NODE':<24} {'ROLE':<10} {'HEAD TIME':<30} {'FILES':>7} {'BYTES':>12} {'SNAPS':>5}  CA (SPKI SHA-256)")
    for n in found:
        # Names and times come from Consul, where anyone who may write the prefix chose them.
        name, role = escape(n.name), escape(n.role or "-")
        if n.head is None:
            print(f"{name:<24} {role:<10} {'-':<30} {'-':>7} {'-':>12} {n.snapshots:>5}  {escape(n.problem)}")
            continue
        h = n.head
        print(f"{name:<24} {role:<10} {escape(h.created):<30} {h.files:>7} {h.bytes:>12} {n.snapshots:>5}  "
              f"{escape(h.ca or '-')}")
    return EXIT_OK
