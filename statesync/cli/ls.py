"""``statesync ls``: the tree inside a snapshot (its --json schema: docs/JSON.md)."""
from __future__ import annotations

import argparse
import grp
import json
import pwd
import stat
from datetime import datetime, timezone

from .. import config
from ..errors import EXIT_OK, NotFound, UsageError
from ..sidecar.wiring import open_repo
from ..snapshot.manifest import DIR, FILE, SYMLINK, Entry, tree_order
from ..snapshot.names import bytes_b64, escape, for_json

_TYPES = {FILE: ("file", stat.S_IFREG), DIR: ("dir", stat.S_IFDIR), SYMLINK: ("symlink", stat.S_IFLNK)}


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
