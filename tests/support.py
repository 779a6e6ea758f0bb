"""Test support: a real Consul agent on free loopback ports, and small tree helpers."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def find_consul() -> str | None:
    """The consul binary: $STATESYNC_CONSUL_BIN, the project's cache, or PATH."""
    for cand in (os.environ.get("STATESYNC_CONSUL_BIN"), str(REPO / ".cache/consul/usr/bin/consul"),
                 shutil.which("consul")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def wait_for(pred, timeout: float, what: str = "condition", details=lambda: "", step: float = 0.05):
    """Poll ``pred`` every ``step`` s and return its first truthy value; after ``timeout`` s raise an
    AssertionError naming ``what``, with ``details()`` (a log tail, say) appended."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = details()
            raise AssertionError(f"{what} not met within {timeout:g}s" + (f"\n{extra}" if extra else ""))
        time.sleep(step)


# A stop only has to end, not to be quick: a sidecar's last commit on a machine loaded past 20
# (CI beside benchmarks) took longer than the 15 s a test allowed and failed it as a hang.
STOP_FLOOR = 60.0


def stop_process(proc: subprocess.Popen, timeout: float, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` to ``proc`` (unless it has exited already) and return its exit code. One still
    running after ``timeout`` s, or STOP_FLOOR s if that is longer, is SIGKILLed and reaped, and the
    TimeoutExpired raised."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(max(timeout, STOP_FLOOR))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def kv_ready(base_url: str, token: str = "", context=None) -> bool:
    """True once the agent at ``base_url`` has a leader and takes a KV write."""
    headers = {"X-Consul-Token": token} if token else {}
    req = urllib.request.Request(f"{base_url}/v1/status/leader", headers=headers)
    with urllib.request.urlopen(req, timeout=1, context=context) as r:
        if not json.loads(r.read()):
            return False
    # A leader alone is not enough for KV writes on a fresh server.
    req = urllib.request.Request(f"{base_url}/v1/kv/_ready", data=b"1", method="PUT", headers=headers)
    with urllib.request.urlopen(req, timeout=2, context=context) as w:
        return w.read().strip() == b"true"


class ConsulAgent:
    """One Consul agent process: ``dev`` (in memory) or a single server with a data dir."""

    def __init__(self, binary: str, dev: bool = True, workdir: str | None = None, extra: list[str] | None = None,
                 ready=None):
        self.binary = binary
        # ready(agent) -> bool replaces the plain-http probe (for an agent with ACLs or HTTPS only)
        self.ready = ready
        self.dev = dev
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="statesync-consul-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra = extra or []
        self.http, self.server, self.lan, self.wan = free_ports(4)
        self.bootstrap_expect = 1
        self.node_name = f"test-{self.server}"
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "consul.log"

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.http}"

    def argv(self) -> list[str]:
        argv = [self.binary, "agent", "-bind", "127.0.0.1", "-client", "127.0.0.1",
                "-http-port", str(self.http), "-server-port", str(self.server),
                "-serf-lan-port", str(self.lan), "-serf-wan-port", str(self.wan),
                "-dns-port", "-1", "-grpc-port", "-1", "-log-level", "warn",
                # short session TTLs keep the writer-lock takeover tests short
                "-hcl", 'session_ttl_min = "1s"']
        if self.dev:
            argv.append("-dev")
        else:
            argv += ["-server", "-bootstrap-expect", str(self.bootstrap_expect), "-data-dir", str(self.workdir / "data"),
                     "-node", self.node_name]
        return argv + self.extra

    def start(self, timeout: float = 30.0) -> "ConsulAgent":
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Start the process without waiting for it to serve (a cluster member needs its peers first)."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"consul exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                return self.ready(self) if self.ready else kv_ready(f"http://{self.addr}")
            except (OSError, ValueError):
                return False
        wait_for(ready, timeout, what=f"consul on {self.addr} ready", details=self.log_tail, step=0.1)

    def log_tail(self) -> str:
        return self.log_path.read_text()[-2000:]

    def answers(self) -> bool:
        """True once the HTTP API answers at all, leader or not (a restarted server's API is up
        before it has elected itself and long before it has replayed its raft log)."""
        try:
            with urllib.request.urlopen(f"http://{self.addr}/v1/status/leader", timeout=1) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    def restart(self, timeout: float = 60.0) -> None:
        """Stop a server (``dev=False``: its data dir stays) with SIGTERM and start it again; return as
        soon as its API answers, before it leads or has replayed its log."""
        assert not self.dev, "a dev agent keeps nothing across a restart"
        self.stop()
        self.launch()
        wait_for(self.answers, timeout, what=f"consul on {self.addr} answering after a restart",
                 details=self.log_tail, step=0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the agent: ``sig``, then SIGKILL after 10 s (not an error here: this serves clean-ups)."""
        if self.proc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stop_process(self.proc, 10, sig)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def write_filler(addr: str, megabytes: int, value_size: int = 400 * 1024, prefix: str = "filler") -> None:
    """Write ``megabytes`` of other keys (``value_size`` each, random bytes) through ``addr``: raft log a
    restarted server must replay before it has caught up."""
    import http.client
    import random
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    value = random.Random(23).randbytes(value_size)
    try:
        for i in range(megabytes * 1024 * 1024 // value_size):
            conn.request("PUT", f"/v1/kv/{prefix}/{i:05d}", body=value)
            answer = conn.getresponse()
            assert answer.status == 200 and answer.read().strip() == b"true", f"filler write {i}: {answer.status}"
    finally:
        conn.close()


class ConsulCluster:
    """``size`` Consul servers on loopback: distinct ports, ``-bootstrap-expect size``,
    each ``-retry-join``-ing the others. ``raft_multiplier = 1`` (Consul's advice for
    production) keeps elections around a second or two."""

    def __init__(self, binary: str, workdir: str, size: int = 3):
        base = Path(workdir)
        self.servers = [ConsulAgent(binary, dev=False, workdir=str(base / f"s{i}")) for i in range(size)]
        for i, server in enumerate(self.servers):
            server.bootstrap_expect = size
            server.node_name = f"s{i}"
            joins = [a for other in self.servers if other is not server
                     for a in ("-retry-join", f"127.0.0.1:{other.lan}")]
            server.extra = [*joins, "-retry-interval", "1s", "-hcl", "performance { raft_multiplier = 1 }"]

    @property
    def addrs(self) -> list[str]:
        return [s.addr for s in self.servers]

    def start(self, timeout: float = 60.0) -> "ConsulCluster":
        for server in self.servers:
            server.launch()
        for server in self.servers:
            server.wait_ready(timeout)
        return self

    def leader(self) -> ConsulAgent | None:
        """The server that is the raft leader now, as a live member sees it; None during an election."""
        for server in self.servers:
            if server.proc is None or server.proc.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"http://{server.addr}/v1/status/leader", timeout=1) as r:
                    address = json.loads(r.read())
            except (OSError, ValueError):
                continue
            for candidate in self.servers:
                if address == f"127.0.0.1:{candidate.server}":
                    return candidate
        return None

    def wait_leader(self, timeout: float, other_than: ConsulAgent | None = None) -> ConsulAgent:
        """Wait until a live server other than ``other_than`` leads and takes KV writes; return it."""
        def new_leader() -> ConsulAgent | None:
            leader = self.leader()
            if leader is None or leader is other_than or leader.proc is None:
                return None
            try:
                return leader if kv_ready(f"http://{leader.addr}") else None
            except (OSError, ValueError):
                return None
        return wait_for(new_leader, timeout, what="a new Consul leader taking KV writes", step=0.1)

    def wait_healthy(self, timeout: float) -> None:
        """Wait until autopilot counts every server healthy and a voter: a revived server is
        a non-voter for a while, and killing a leader before then leaves no quorum."""
        def healthy() -> bool:  # as the first live server that answers sees it
            for server in self.servers:
                if server.proc is None:
                    continue
                try:
                    with urllib.request.urlopen(f"http://{server.addr}/v1/operator/autopilot/health", timeout=2) as r:
                        health = json.loads(r.read())
                except (OSError, ValueError):
                    continue
                members = health.get("Servers") or []
                return bool(health.get("Healthy") and len(members) == len(self.servers)
                            and all(m.get("Healthy") and m.get("Voter") for m in members))
            return False
        wait_for(healthy, timeout, what="every Consul server healthy and a voter", step=0.2)

    def kill(self, server: ConsulAgent) -> None:
        """SIGKILL one server (its data dir stays, so ``revive`` brings it back as the same member)."""
        server.stop(signal.SIGKILL)

    def revive(self, server: ConsulAgent, timeout: float = 30.0) -> None:
        server.start(timeout)

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()


def clean_env() -> dict[str, str]:
    """This process's environment without any CONSUL_* or STATESYNC_* variable: a test sets
    the ones it means, and none of the runner's leaks into a statesync it starts."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "STATESYNC_"))}


def statesync_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "statesync", *args]


def plain_lines(stderr: str) -> list[str]:
    """The lines of ``stderr``, the JSON form a fatal error takes with JSON logs (docs/JSON.md)
    given back as the plain line it stands for: a test reads a failure alike in both formats."""
    out = []
    for line in stderr.strip().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        fatal = isinstance(event, dict) and event.get("event") == "statesync: error"
        out.append(f"statesync: error: {event.get('error')}" if fatal else line)
    return out


def run_statesync(args, env: dict, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """``statesync *args`` to the end; with ``check``, a failure raises naming its stderr."""
    proc = subprocess.run(statesync_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(f"{args}: exit {proc.returncode}: {proc.stderr}")
    return proc


def make_tree(root: Path) -> None:
    """The tree of the core issue's acceptance test."""
    (root / "ca").mkdir(parents=True)
    (root / "certs").mkdir()
    (root / "api/zones/master/_etc").mkdir(parents=True)
    (root / "ca/ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (root / "ca/ca.key").write_bytes(b"secret-key-material")
    os.chmod(root / "ca/ca.key", 0o600)
    (root / "certs/node.crt").write_text("node cert")
    os.chmod(root / "certs/node.crt", 0o644)
    (root / "certs/run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "certs/run.sh", 0o755)
    (root / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (root / "empty").write_bytes(b"")
    (root / "big.dat").write_bytes(os.urandom(3 * 1024 * 1024))
    (root / "api/zones/master/_etc/größe-ünïcødé.conf").write_text("object Host \"h\" {}\n")
    os.symlink("../ca/ca.crt", root / "certs/ca-link.crt")
    os.utime(root / "certs/node.crt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def tree_state(root: Path) -> dict:
    """Every path with its type, mode, mtime and bytes (or link target), for comparison."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".statesync-")]
        for name in dirnames + filenames:
            if name.startswith(".statesync-"):
                continue
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p), st.st_mtime_ns)
            elif p.is_dir():
                out[rel] = ("d", oct(st.st_mode & 0o7777), st.st_mtime_ns)
            else:
                out[rel] = ("f", oct(st.st_mode & 0o7777), st.st_mtime_ns, p.read_bytes())
    return out


def http_get(port: int, path: str) -> tuple[int, str]:
    """GET ``path`` from a local HTTP endpoint: (status, body); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""
