"""Commands around the sidecar rather than the snapshots: a key for container secrets, the
container's health probe, and pinning a satellite's parent before its first enrolment."""
from __future__ import annotations

import argparse
import sys
import threading

from .. import config
from ..errors import EXIT_FAILURE, EXIT_OK, StatesyncError, UsageError


def cmd_keygen(cfg: config.Config, args: argparse.Namespace) -> int:
    import os

    from ..snapshot.crypto import format_key, generate_key
    if args.out == "-":
        # For a secret store that reads stdin (docker secret create NAME -): no file ever holds the key.
        if args.group is not None:
            raise UsageError("--group: a key written to stdout (--out -) has no file to give a group")
        sys.stdout.write(format_key(generate_key()) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    mode = 0o600 if args.group is None else 0o640
    try:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise UsageError(f"--out: {args.out} exists; statesync never overwrites a key") from None
    except OSError as exc:
        raise StatesyncError(f"--out: cannot create {args.out}: {exc.strerror}") from None
    try:
        if args.group is not None:
            try:  # group first, then the mode: never readable by a group it was not meant for
                os.fchown(fd, -1, args.group)
            except OSError as exc:
                os.unlink(args.out)
                raise StatesyncError(f"--group: cannot give {args.out} to group {args.group}: {exc.strerror}") from None
        os.fchmod(fd, mode)
        os.write(fd, (format_key(generate_key()) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    group = "" if args.group is None else f", group {args.group}"
    print(f"wrote a new encryption key to {args.out} (mode {mode:04o}{group}); keep a copy outside Consul")
    return EXIT_OK


def cmd_pin_parent(cfg: config.Config, args: argparse.Namespace) -> int:
    from ..consul.store import Store
    from ..guard.parent import pin_at_startup
    if not cfg.guard.parent_host:
        raise UsageError("guard.parent_host: pin-parent needs the parent endpoint (STATESYNC_GUARD_PARENT_HOST)")
    stop = threading.Event()
    timer = threading.Timer(args.wait, stop.set)
    timer.daemon = True
    timer.start()
    try:
        pin_at_startup(cfg, Store(cfg.consul), stop)
    finally:
        timer.cancel()
    if stop.is_set():
        print(f"statesync: error: could not pin the certificate of {cfg.guard.parent_host} within {args.wait:g}s "
              "(see the log above)", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_health(cfg: config.Config, args: argparse.Namespace) -> int:
    import http.client
    if not cfg.http_port:
        raise UsageError("http.port: 0, so the sidecar serves no health endpoint to ask (set STATESYNC_HTTP_PORT)")
    # A sidecar listening on every address answers on loopback too.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.http_bind, cfg.http_bind)
    path = "/readyz" if args.ready else "/healthz"
    url = f"http://{host if ':' not in host else f'[{host}]'}:{cfg.http_port}{path}"
    conn = http.client.HTTPConnection(host, cfg.http_port, timeout=args.timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read(2000).decode("utf-8", "replace").strip().splitlines()
    except (OSError, http.client.HTTPException) as exc:
        print(f"unhealthy: {url}: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        conn.close()
    first = body[0] if body else ""
    if resp.status == 200:
        print(f"healthy: {url}: {first}")
        return EXIT_OK
    print(f"unhealthy: {url} answered {resp.status}: {first}", file=sys.stderr)
    return EXIT_FAILURE
