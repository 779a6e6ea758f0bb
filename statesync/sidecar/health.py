"""The HTTP endpoint: /healthz (alive), /readyz (restored and Consul reachable), /metrics."""
from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import REGISTRY

log = structlog.get_logger(__name__)

Check = Callable[[], tuple[bool, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # socketserver prints a traceback to stderr here; a probe that hangs up is no news.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("health client went away", client=client_address[0], error=str(exc))
        else:
            log.error("health request failed", error=f"{type(exc).__name__}: {exc}")


class HealthServer:
    """Serves the probes on ``bind:port`` from a daemon thread until ``stop()``."""

    def __init__(self, bind: str, port: int, alive: Check, ready: Check):
        self._checks = {"/healthz": alive, "/readyz": ready}
        handler = self._handler()
        self._server = _Server((bind, port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="health", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "HealthServer":
        self._thread.start()
        log.info("health endpoint listening", port=self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        checks = self._checks

        class Handler(BaseHTTPRequestHandler):
            # a client that sends half a request and stalls would hold its thread for ever
            timeout = 10

            def do_GET(self):  # noqa: N802 (http.server's name)
                self._answer(body=True)

            def do_HEAD(self):  # noqa: N802
                # Some probes and load balancers ask HEAD: the GET's status and headers, no body.
                self._answer(body=False)

            def _answer(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST, body)
                elif path in checks:
                    ok, why = checks[path]()
                    self._send(200 if ok else 503, (why + "\n").encode(), "text/plain; charset=utf-8", body)
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8", body)

            def _send(self, code: int, content: bytes, ctype: str, body: bool) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if body:
                    self.wfile.write(content)

            def log_message(self, *args) -> None:
                pass  # probes every few seconds would drown the log

        return Handler
