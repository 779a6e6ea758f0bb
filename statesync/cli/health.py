"""``statesync health``: the container's health probe, asking a running sidecar's /healthz (or /readyz)."""
from __future__ import annotations

import argparse
import sys

from .. import config
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError


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
