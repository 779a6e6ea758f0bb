"""Consul behind a reverse proxy that wants HTTP basic auth, as the consul CLI reaches it:
CONSUL_HTTP_AUTH sent as an Authorization header, CONSUL_HTTP_ADDR with the proxy's path prefix.

The proxy is a small loopback HTTP server in this process that checks the header and forwards
everything else, header included, to the real Consul agent. Credentials put in the address, and
Consul Enterprise's namespace, are refused in one line that never shows the password."""
from __future__ import annotations

import base64
import http.client
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ..support import clean_env, run_statesync

pytestmark = pytest.mark.consul

USER = "statesync"
PREFIX = "/consul"


class Proxy:
    """Forwards ``PREFIX/...`` to Consul when the request carries the expected basic auth; else 401."""

    def __init__(self, upstream: tuple[str, int], password: str, prefix: str = PREFIX):
        self.upstream, self.prefix = upstream, prefix
        self.expected = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
        self.seen: list[tuple[str, str, int]] = []  # (method, path, status)
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # the test reads self.seen, not stderr
                pass

            def _handle(self):
                proxy.handle(self)

            do_GET = do_PUT = do_DELETE = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else None
        if req.headers.get("Authorization") != self.expected or not req.path.startswith(self.prefix + "/"):
            status, headers, content = 401, [("WWW-Authenticate", 'Basic realm="consul"')], b"unauthorized\n"
        else:
            upstream = http.client.HTTPConnection(*self.upstream, timeout=120)
            try:
                forwarded = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(req.command, req.path[len(self.prefix):], body=body, headers=forwarded)
                resp = upstream.getresponse()
                status, content = resp.status, resp.read()
                headers = [(k, v) for k, v in resp.getheaders()
                           if k.lower() not in ("content-length", "transfer-encoding", "connection")]
            finally:
                upstream.close()
        with self.lock:
            self.seen.append((req.command, req.path, status))
        req.send_response(status)
        for k, v in headers:
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(content)))
        req.end_headers()
        req.wfile.write(content)

    def __enter__(self) -> "Proxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=30)


@pytest.fixture
def password() -> str:
    return "pw-" + secrets.token_hex(8)


@pytest.fixture
def proxy(consul, password):
    host, _, port = consul.addr.rpartition(":")
    with Proxy((host, int(port)), password) as p:
        yield p


@pytest.fixture
def env(prefix, tmp_path) -> dict:
    root = tmp_path / "root"
    (root / "zones.d").mkdir(parents=True)
    (root / "zones.d/satellites.conf").write_text('object Zone "sat" {}\n')
    e = clean_env()
    e.update(STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root), STATESYNC_NODE="master1",
             STATESYNC_LOG_FORMAT="console")
    return e


def one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if "retrying" not in line]
    assert len(lines) == 1 and lines[0].startswith("statesync: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("at", ["", PREFIX])
def test_consul_http_auth_reaches_consul_through_a_proxy_that_checks_basic_auth(consul, env, password, at):
    host, _, port = consul.addr.rpartition(":")
    with Proxy((host, int(port)), password, prefix=at) as proxy:
        env.update(CONSUL_HTTP_ADDR=f"http://127.0.0.1:{proxy.port}{at}", CONSUL_HTTP_AUTH=f"{USER}:{password}")
        backup = run_statesync(["backup"], env)
        assert backup.returncode == 0, backup.stderr
        listed = run_statesync(["ls"], env)
    assert listed.returncode == 0 and "zones.d/satellites.conf" in listed.stdout, listed.stderr
    assert proxy.seen and all(status != 401 for _, _, status in proxy.seen), proxy.seen
    assert any(method == "PUT" and path.startswith(f"{at}/v1/txn") for method, path, _ in proxy.seen)
    assert password not in backup.stdout + backup.stderr + listed.stdout + listed.stderr


def test_a_proxy_that_wants_basic_auth_and_gets_none_is_one_line_naming_consul_http_auth(proxy, env):
    env.update(CONSUL_HTTP_ADDR=f"http://127.0.0.1:{proxy.port}{PREFIX}")
    proc = run_statesync(["snapshots"], env)
    assert proc.returncode == 1
    line = one_line(proc)
    assert "answered 401 Unauthorized" in line and "CONSUL_HTTP_AUTH" in line


def test_wrong_basic_auth_credentials_are_one_line_that_never_shows_them(proxy, env, password):
    wrong = password + "-wrong"
    env.update(CONSUL_HTTP_ADDR=f"http://127.0.0.1:{proxy.port}{PREFIX}", CONSUL_HTTP_AUTH=f"{USER}:{wrong}")
    proc = run_statesync(["backup"], env)
    assert proc.returncode == 1
    assert "refused the basic auth credentials" in one_line(proc)
    assert wrong not in proc.stdout + proc.stderr


@pytest.mark.parametrize("template", ["{user}:{pw}@127.0.0.1:{port}", "http://{user}:{pw}@127.0.0.1:{port}/consul",
                                      "127.0.0.1:1,{user}:{pw}@127.0.0.1:{port}"])
def test_credentials_in_consul_http_addr_are_refused_in_one_line_that_never_shows_the_password(proxy, env, password,
                                                                                                 template):
    addr = template.format(user=USER, pw=password, port=proxy.port)
    env.update(CONSUL_HTTP_ADDR=addr)
    proc = run_statesync(["snapshots"], env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert "credentials in the address" in line and "CONSUL_HTTP_AUTH" in line
    assert password not in proc.stdout + proc.stderr and not proxy.seen


def test_consul_namespace_is_refused_in_one_line_rather_than_ignored(consul, env):
    env.update(CONSUL_HTTP_ADDR=consul.addr, CONSUL_NAMESPACE="team-a")
    proc = run_statesync(["snapshots"], env)
    assert proc.returncode == 2
    assert one_line(proc).startswith("statesync: error: CONSUL_NAMESPACE: ")
    env.update(CONSUL_NAMESPACE="default")
    assert run_statesync(["snapshots"], env).returncode == 0
