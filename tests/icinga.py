"""Real Icinga 2 nodes for the end-to-end suite, several on one machine.

Each node has five directories of its own under ``<base>/<cn>/`` (etc, lib, log,
cache, run). Every Icinga 2 command runs in a fresh mount namespace (``unshare -m``)
in which those directories are bind-mounted over /etc/icinga2, /var/lib/icinga2,
/var/log/icinga2, /var/cache/icinga2 and /run/icinga2; mounts are made private first,
so nothing leaks to the host. ``icinga2 daemon -d`` keeps its namespace alive; when
its last process exits the namespace and its mounts are gone. A sidecar needs no
namespace: it is pointed at the host path of the node's lib directory.

Every process the suite starts carries ``E2E_STATESYNC_SESSION=<id>`` in its
environment, and every Icinga 2 process also ``E2E_STATESYNC_NODE=<id>/<cn>``, so
that a node is stopped, and the session cleaned up, by PID even when the process
was started by someone else (the satellite guard's restart command).

Nodes are rebuilt like containers: the five directories are deleted, the sidecar
restores lib/, then an "entrypoint" recreates /etc/icinga2. A master's entrypoint
runs ``node setup --master`` (which keeps a CA and certificate it finds in lib/, and
mints new ones in an empty lib/). A satellite's configuration is what its enrolment
wrote; it is kept outside the node's directories, as config management would keep
it, because ``node setup`` on a satellite always makes a new key and would enrol again.

Satellites enrol without a ticket, through Consul (docs/ENROL.md): ``pending_satellite``
is a satellite's first-start entrypoint (``node setup`` without ``--ticket``: a new key, a
self-signed certificate and a request pending on the master); its sidecar registers the
request and the master's sidecar accepts and signs it.

Stdlib only (it and tests/support.py): also run as a script, ``python tests/icinga.py
reenrol SPEC.json``, the command the satellite guard fires in scenario 4 (stop, node setup
without a ticket, start: the sidecars do the rest).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from base64 import b64encode
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__:
    from .support import wait_for
else:  # run as a script (the guard's restart command): tests/ is sys.path[0]
    from support import wait_for

PACKAGE_ETC = Path("/etc/icinga2")
MOUNTS = {"etc": "/etc/icinga2", "lib": "/var/lib/icinga2", "log": "/var/log/icinga2",
          "cache": "/var/cache/icinga2", "run": "/run/icinga2"}
SESSION_VAR = "E2E_STATESYNC_SESSION"
NODE_VAR = "E2E_STATESYNC_NODE"
LIB = MOUNTS["lib"]
MAX_WAIT = 60.0

# $1 is the root file system of the node's Icinga 2 version ("" for the host's own), $2 the node's
# base directory, $3 "root" or "host" (below), the rest the command. In a root, mode "root" runs the
# command chrooted; mode "host" runs a host program (statesync on the host's Python, as in an init
# container of the Icinga image) that sees the node's directories at the same paths as the root's
# icinga2, which <base>/bin/icinga2 runs (Node.run_host). /run/icinga2 does not exist on a machine where the
# package's tmpfiles never ran; the mount point is created (an empty directory, as the package
# would make it) before anything is mounted on it. In a root, icinga2 (2.14 and later) aborts at
# start without /proc (it lists /proc/self/fd), hence /proc and /dev there.
_NS_SCRIPT = r"""
set -e
root=$1 base=$2 mode=$3; shift 3
mount --make-rprivate /
for d in etc:/etc/icinga2 lib:/var/lib/icinga2 log:/var/log/icinga2 cache:/var/cache/icinga2 run:/run/icinga2; do
  [ -d "$root${d#*:}" ] || mkdir -p "$root${d#*:}"
  mount --bind "$base/${d%%:*}" "$root${d#*:}"
  if [ -n "$root" ] && [ "$mode" = host ]; then
    [ -d "${d#*:}" ] || mkdir -p "${d#*:}"
    mount --bind "$base/${d%%:*}" "${d#*:}"
  fi
done
if [ -n "$root" ]; then
  mount -t proc proc "$root/proc"
  mount --bind /dev "$root/dev"
  if [ "$mode" = host ]; then
    PATH="$base/bin:$PATH" exec "$@"
  fi
  exec chroot "$root" "$@"
fi
exec "$@"
"""

# The Icinga 2 versions the end-to-end matrix runs (docs/ICINGA_VERSIONS.md): version id -> the root
# file system that holds it, built by scripts/icinga_roots.sh under .cache/roots/; "" is the host's
# own binary (bookworm's 2.13, scripts/setup.sh). The one place that maps a version to its root.
VERSIONS = {"2.13": "", "2.14": "trixie", "2.16": "sid"}
ROOTS = Path(__file__).resolve().parent.parent / ".cache" / "roots"
# A comma-separated list of VERSIONS' keys restricts the matrix to them (the Python 3.13 pass, which
# runs inside the trixie root, sets it to that root's 2.14). Not STATESYNC_*: statesync refuses those.
ONLY_VAR = "E2E_ICINGA_VERSIONS"


def matrix() -> list[str]:
    """The versions the end-to-end modules run on: every one of VERSIONS, or those ONLY_VAR names."""
    only = [v.strip() for v in os.environ.get(ONLY_VAR, "").split(",") if v.strip()]
    unknown = [v for v in only if v not in VERSIONS]
    if unknown:
        raise ValueError(f"{ONLY_VAR}: unknown Icinga 2 version(s) {', '.join(unknown)}: one of {', '.join(VERSIONS)}")
    return only or list(VERSIONS)


def version_root(version: str) -> str:
    """The root for Icinga 2 ``version`` (a key of VERSIONS): "" for the host, else an absolute path.
    Fails (never skips) the test when that root is not built."""
    import pytest
    if version not in VERSIONS:
        pytest.fail(f"unknown Icinga 2 version {version!r}: one of {', '.join(VERSIONS)}")
    if not VERSIONS[version]:
        # Inside a root (scripts/pytest_in_root.sh) the "host" binary is that root's own Icinga 2:
        # a run labelled 2.13 must not quietly test another version.
        found = ".".join(map(str, icinga_version("")[:2]))
        if found != version:
            pytest.fail(f"Icinga 2 {version}: the icinga2 on this machine is {found}; "
                        f"restrict the matrix with {ONLY_VAR}={found} (tests/e2e/conftest.py)")
        return ""
    root = ROOTS / VERSIONS[version]
    if not (root / "usr/sbin/icinga2").is_file():
        pytest.fail(f"Icinga 2 {version}: no {root}/usr/sbin/icinga2: run scripts/icinga_roots.sh")
    return str(root.resolve())


_VERSION_SCRIPT = r"""
set -e
root=$1; shift
mount --make-rprivate /
mount -t proc proc "$root/proc"
exec chroot "$root" "$@"
"""
_versions: dict[str, tuple[int, int, int]] = {}


def icinga_version(root: str = "") -> tuple[int, int, int]:
    """(major, minor, patch) of the Icinga 2 in ``root`` ("" = the host's), from ``icinga2 --version``,
    read once per root. Debian's 2.14.6+deb13u1 calls itself r2.14.6-1: patches it carries (the 403 for
    a missing permission) do not show here, so a test branches on what Icinga does, not on this, there."""
    if root not in _versions:
        if root:
            cmd = ["unshare", "-m", "--", "sh", "-c", _VERSION_SCRIPT, "sh", root, "icinga2", "--version"]
        else:
            cmd = [icinga2_binary() or "icinga2", "--version"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
        found = re.search(r"version: r?(\d+)\.(\d+)\.(\d+)", out)
        if found is None:
            raise AssertionError(f"no version in the output of {' '.join(cmd)}: {out[:300]!r}")
        _versions[root] = (int(found[1]), int(found[2]), int(found[3]))
    return _versions[root]


def icinga2_binary() -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which("icinga2", path=path)


def require_nodes(root: str = "") -> None:
    """Fail (never skip) the test that needs real Icinga 2 nodes when this machine cannot run them."""
    import pytest
    if root and not Path(root, "usr/sbin/icinga2").is_file():
        pytest.fail(f"no icinga2 in {root}: run scripts/icinga_roots.sh")
    if not root and icinga2_binary() is None:
        pytest.fail("no icinga2 binary: run scripts/setup.sh (installs icinga2-bin and icinga2-common)")
    problem = unshare_problem()
    if problem:
        pytest.fail(f"needs a mount namespace for the Icinga 2 nodes: {problem}")


def unshare_problem() -> str | None:
    """Why a mount namespace with private bind mounts cannot be made here, or None when it can."""
    if not shutil.which("unshare"):
        return "the unshare program (util-linux) is not installed"
    with tempfile.TemporaryDirectory(prefix="statesync-e2e-probe-") as tmp:
        src, dst = Path(tmp, "src"), Path(tmp, "dst")
        src.mkdir()
        dst.mkdir()
        (src / "probe").write_text("x")
        script = 'mount --make-rprivate / && mount --bind "$1" "$2" && test -f "$2/probe"'
        try:
            proc = subprocess.run(["unshare", "-m", "--", "sh", "-c", script, "sh", str(src), str(dst)],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare -m failed: {exc}"
    if proc.returncode:
        return (f"unshare -m with a private bind mount is impossible here (it needs root or CAP_SYS_ADMIN): "
                f"{proc.stderr.strip()[-300:]}")
    return None


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- processes ------------------------------------------------------------------------

def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def pids_with(var: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds ``var=value``."""
    needle = f"{var}={value}".encode()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        if needle in _environ(int(name)).split(b"\0") and alive(int(name)):
            out.append(int(name))
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has finished; only its parent may reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def terminate(pids: list[int], timeout: float = 30.0, first: int = signal.SIGTERM) -> list[int]:
    """Send ``first`` to each pid, SIGKILL what is left after ``timeout``; return the pids that were killed."""
    for pid in pids:
        try:
            os.kill(pid, first)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    killed = [p for p in pids if alive(p)]
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in killed):
        time.sleep(0.05)
    return killed


# -- one node -------------------------------------------------------------------------

@dataclass
class Node:
    cn: str
    zone: str
    base: str
    api_port: int
    session: str
    # The root file system of the node's Icinga 2 version (version_root); "" runs the host's own.
    icinga_root: str = ""

    @property
    def root(self) -> Path:
        return Path(self.base)

    def dir(self, name: str) -> Path:
        return self.root / name

    @property
    def lib(self) -> Path:
        return self.dir("lib")

    @property
    def etc(self) -> Path:
        return self.dir("etc")

    @property
    def saved_config(self) -> Path:
        """The node's /etc/icinga2 as config management keeps it (outside the node's directories)."""
        return self.root / "config-etc"

    @property
    def node_marker(self) -> str:
        return f"{self.session}/{self.cn}"

    def env(self) -> dict:
        env = dict(os.environ)
        env[SESSION_VAR] = self.session
        env[NODE_VAR] = self.node_marker
        return env

    @property
    def package_etc(self) -> Path:
        """/etc/icinga2 as the node's Icinga 2 package ships it (in its root)."""
        return Path(self.icinga_root + str(PACKAGE_ETC)) if self.icinga_root else PACKAGE_ETC

    @property
    def version(self) -> tuple[int, int, int]:
        """The node's Icinga 2 version, from ``icinga2 --version`` (read once per root)."""
        return icinga_version(self.icinga_root)

    # directories
    def make_dirs(self, etc_from: Path | None = PACKAGE_ETC) -> None:
        """Create the node's directories as a fresh container has them; ``etc_from`` fills an empty etc/
        (PACKAGE_ETC: the package's /etc/icinga2 of the node's own version)."""
        if etc_from == PACKAGE_ETC:
            etc_from = self.package_etc
        nagios = pwd.getpwnam("nagios")
        for name in MOUNTS:
            d = self.dir(name)
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, nagios.pw_uid, nagios.pw_gid)  # as the package makes them; not recursive
        if etc_from is not None and not any(self.etc.iterdir()):
            subprocess.run(["cp", "-a", f"{etc_from}/.", str(self.etc)], check=True)

    def wipe(self) -> None:
        """Delete the node's directories entirely (the node must be stopped)."""
        assert not self.pids(), f"{self.cn} still runs: {self.pids()}"
        for name in MOUNTS:
            shutil.rmtree(self.dir(name), ignore_errors=True)
            assert not self.dir(name).exists()

    def save_config(self) -> None:
        shutil.rmtree(self.saved_config, ignore_errors=True)
        subprocess.run(["cp", "-a", str(self.etc), str(self.saved_config)], check=True)

    # commands
    def run(self, *argv: str, timeout: float = MAX_WAIT, check: bool = True,
            mode: str = "root") -> subprocess.CompletedProcess:
        """Run ``argv`` in a fresh mount namespace that sees this node's directories (in its root)."""
        cmd = ["unshare", "-m", "--", "sh", "-c", _NS_SCRIPT, "sh", self.icinga_root, self.base, mode, *argv]
        try:
            proc = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"{self.cn}: {' '.join(argv)} did not finish within {timeout:g} s\n"
                                 f"{exc.stdout or ''}\n{exc.stderr or ''}\n{self.log_tail()}") from None
        if check and proc.returncode:
            raise AssertionError(f"{self.cn}: {' '.join(argv)} exited {proc.returncode}\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{self.log_tail()}")
        return proc

    def icinga2(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("icinga2", *args, **kw)

    def run_host(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        """Run a host program ``argv`` in the node's namespace, where ``icinga2`` on PATH is the node's
        own version: an init container of the Icinga image, statesync in it."""
        if self.icinga_root:
            shim = self.root / "bin/icinga2"
            shim.parent.mkdir(parents=True, exist_ok=True)
            shim.write_text(f'#!/bin/sh\nexec chroot "{self.icinga_root}" /usr/sbin/icinga2 "$@"\n')
            shim.chmod(0o755)
        return self.run(*argv, mode="host", **kw)

    # the daemon
    def pidfile_pid(self) -> int | None:
        try:
            return int(self.dir("run").joinpath("icinga2.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def pids(self) -> list[int]:
        return pids_with(NODE_VAR, self.node_marker)

    def start(self, timeout: float = MAX_WAIT) -> int:
        """``icinga2 daemon -d`` in the node's namespace; wait until its API port listens."""
        assert not self.pids(), f"{self.cn} already runs: {self.pids()}"
        log = self.dir("log") / "icinga2.log"
        if log.exists():  # a fresh log per start, so that a tail shows this start; the old one is kept
            n = 1
            while log.with_name(f"icinga2.log.{n}").exists():
                n += 1
            log.rename(log.with_name(f"icinga2.log.{n}"))
        self.icinga2("daemon", "-d", timeout=timeout)
        wait_for(lambda: self.listening() and self.pids(), timeout,
                 what=f"{self.cn}: API port {self.api_port} listening", details=self.log_tail, step=0.1)
        return self.pidfile_pid() or self.pids()[0]

    def listening(self) -> bool:
        if not self.pids():
            raise AssertionError(f"{self.cn}: Icinga 2 exited\n{self.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", self.api_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> list[int]:
        """Stop every Icinga 2 process of this node: SIGTERM to the main one, then the rest; SIGKILL after
        ``timeout``. Returns the pids that had to be killed."""
        main = self.pidfile_pid()
        pids = self.pids()
        if main in pids:
            pids.remove(main)
            pids.insert(0, main)
            os.kill(main, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and alive(main):
                time.sleep(0.05)
        return terminate(self.pids(), timeout=5)

    def seen_by_daemon(self, rel: str) -> bytes:
        """``/var/lib/icinga2/<rel>`` as the running Icinga 2 sees it, through its mount namespace."""
        pid = self.pidfile_pid()
        assert pid and alive(pid), f"{self.cn} does not run"
        return Path(f"/proc/{pid}/root{LIB}/{rel}").read_bytes()

    def log_tail(self, lines: int = 25) -> str:
        path = self.dir("log") / "icinga2.log"
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"--- {self.cn}: no {path}"
        return f"--- last lines of {self.cn}'s icinga2.log:\n" + "\n".join(text)

    # configuration
    def patch_api_listener(self) -> None:
        """Bind the ApiListener to loopback on the node's own port (several nodes share the machine)."""
        path = self.etc / "features-available/api.conf"
        text = path.read_text()
        text = re.sub(r"\n\s*bind_(host|port) = .*", "", text)
        text = text.rstrip().removesuffix("}") + f'  bind_host = "127.0.0.1"\n  bind_port = {self.api_port}\n}}\n'
        path.write_text(text)

    def ca_cert(self) -> Path:
        return self.lib / "ca/ca.crt"


# What the master's sidecar needs of Icinga 2's API to accept satellites (docs/ENROL.md).
ENROL_PERMISSIONS = ("config/query", "config/modify", "objects/query/Endpoint", "objects/query/Zone")


def provision_master(master: Node, satellites: list[Node], api_user: str, api_password: str,
                     enrol_password: str = "") -> None:
    """The master's entrypoint: a fresh /etc/icinga2, ``node setup --master`` (which mints a CA only when
    lib/ has none), the API listener on its port, an API user for the test, the given satellites' zones
    (none when they enrol through Consul) and, with ``enrol_password``, the sidecar's API user "statesync"
    with just the permissions enrolment needs."""
    master.make_dirs()
    master.icinga2("node", "setup", "--master", "--cn", master.cn, "--zone", master.zone, "--disable-confd")
    master.patch_api_listener()
    users = f'object ApiUser "{api_user}" {{\n  password = "{api_password}"\n  permissions = [ "*" ]\n}}\n'
    if enrol_password:
        perms = ", ".join(f'"{p}"' for p in ENROL_PERMISSIONS)
        users += f'\nobject ApiUser "statesync" {{\n  password = "{enrol_password}"\n  permissions = [ {perms} ]\n}}\n'
    (master.etc / "conf.d/api-users.conf").write_text(users)
    with open(master.etc / "zones.conf", "a") as fh:
        # A zone the operator configured by hand: a registration that names it fails the stage.
        fh.write(f'\nobject Zone "legacy-dc" {{\n\tparent = "{master.zone}"\n}}\n')
        for sat in satellites:
            fh.write(f'\nobject Endpoint "{sat.cn}" {{\n}}\n\nobject Zone "{sat.zone}" {{\n'
                     f'\tendpoints = [ "{sat.cn}" ]\n\tparent = "{master.zone}"\n}}\n')
    _chown_tree(master.etc)


def pending_satellite(sat: Node, master: Node) -> None:
    """A satellite's first-start entrypoint without a ticket: pin the parent's certificate, ``node
    setup`` (a new key, a self-signed certificate, the request pending on the master, the configuration)."""
    shutil.rmtree(sat.etc, ignore_errors=True)
    sat.make_dirs()
    certs = sat.lib / "certs"
    certs.mkdir(exist_ok=True)
    nagios = pwd.getpwnam("nagios")
    os.chown(certs, nagios.pw_uid, nagios.pw_gid)
    trusted = f"{LIB}/certs/trusted-parent.crt"
    sat.icinga2("pki", "save-cert", "--host", "127.0.0.1", "--port", str(master.api_port), "--trustedcert", trusted)
    parent = f"127.0.0.1,{master.api_port}"
    sat.icinga2("node", "setup", "--cn", sat.cn, "--endpoint", f"{master.cn},{parent}", "--zone", sat.zone,
                "--parent_zone", master.zone, "--parent_host", parent, "--trustedcert", trusted,
                "--accept-config", "--accept-commands", "--disable-confd")
    sat.patch_api_listener()
    _chown_tree(sat.etc)
    sat.save_config()


def request_files(master: Node) -> dict[str, dict]:
    """The master's pending (and signed) certificate requests: fingerprint -> the JSON document."""
    out = {}
    for path in sorted((master.lib / "certificate-requests").glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):  # a hostile file, planted by a test
            continue
    return out


def rebuild_satellite_config(sat: Node) -> None:
    """A rebuilt satellite's entrypoint when its certificate is back: its configuration, no enrolment."""
    shutil.rmtree(sat.etc, ignore_errors=True)
    sat.make_dirs(etc_from=sat.saved_config)


def _chown_tree(path: Path) -> None:
    subprocess.run(["chown", "-R", "nagios:nagios", str(path)], check=True)


# -- the master's REST API ------------------------------------------------------------

class Api:
    def __init__(self, master: Node, user: str, password: str):
        self.master, self.auth = master, "Basic " + b64encode(f"{user}:{password}".encode()).decode()
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE  # loopback; the CA changes in scenario 4

    def get(self, path: str, timeout: float = 3.0):
        req = urllib.request.Request(f"https://127.0.0.1:{self.master.api_port}{path}",
                                     headers={"Authorization": self.auth, "Accept": "application/json"})
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            return json.loads(resp.read())

    def connected(self, cn: str) -> bool | None:
        """The master's view of endpoint ``cn``: True/False, None when the API does not answer."""
        try:
            res = self.get(f"/v1/objects/endpoints/{cn}")["results"]
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return bool(res and res[0]["attrs"]["connected"])

    def up(self) -> bool:
        try:
            self.get("/v1/status/IcingaApplication")
            return True
        except (OSError, ValueError, urllib.error.URLError):
            return False


# -- the guard's restart command ------------------------------------------------------

def reenrol(spec_path: str) -> int:
    """Stop the satellite, node setup without a ticket (a new request), start it. Logs to <sat>/reenrol.log."""
    spec = json.loads(Path(spec_path).read_text())
    sat, master = Node(**spec["satellite"]), Node(**spec["master"])
    log_path = sat.root / "reenrol.log"

    def note(event: str, **fields) -> None:
        with open(log_path, "a") as fh:
            fh.write(json.dumps({"time": time.time(), "event": event, **fields}) + "\n")

    note("start", pid=os.getpid())
    try:
        killed = sat.stop()
        note("stopped", killed=killed)
        pending_satellite(sat, master)
        note("requested")
        pid = sat.start()
        note("started", pid=pid)
    except BaseException as exc:
        note("failed", error=f"{type(exc).__name__}: {exc}"[-4000:])
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tests/icinga.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("reenrol", help="the satellite guard's restart command").add_argument("spec")
    args = p.parse_args(argv)
    return reenrol(args.spec)


def write_spec(path: Path, satellite: Node, master: Node) -> None:
    path.write_text(json.dumps({"satellite": asdict(satellite), "master": asdict(master)}))


if __name__ == "__main__":
    sys.exit(main())
