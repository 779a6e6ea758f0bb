#!/usr/bin/env python3
"""A rebuilt master at L (issue 26.1): from a lost volume to a ready master, on a real engine. Not a CI test.

    .venv/bin/python bench/stack_rto.py                      # L, the 2.16 image, 3 repetitions; about 6 minutes
    .venv/bin/python bench/stack_rto.py --layouts 2.16,2.14  # also the image's layout up to 2.15; about 12 minutes
    .venv/bin/python bench/stack_rto.py --quick              # the tiny fixture, 1 repetition: about a minute

**On the engine** (scripts/engine.sh, scripts/images.sh: the stand-ins of tests/images/): the
stacks of compose/ as shipped, copied unchanged with their secrets (tests/compose_support.py):
``consul.yml`` (one real Consul 1.8.7 server with a data directory, on a network of its own) and
``master.yml`` (the one-shot volume container, the statesync sidecar, Icinga 2). The master's
first start makes its CA and certificates; its Icinga 2 is then stopped (timed: its own program
state dump is most of it), the state file of bench/icinga_state.py (L: 337.5 MB) is renamed into
``/data/var/lib/icinga2`` as Icinga writes it, the running sidecar commits it, and the stack is
stopped and ``down -v``: the volume is lost. Each rebuild then times ``docker-compose up -d`` until
the sidecar's "restored an empty root" and "ready" (the marker), Icinga 2's "Icinga application
loader" (after icinga-start.sh's wait), "Restored N objects" (its state file read) and "Activated
all objects" (engine timestamps of the log lines), and Icinga's API answering
/v1/objects/endpoints to the sidecar's API user, polled from the host every 0.2 s through the
published port over TLS verified against the CA saved before the loss; the CA's fingerprint in
the volume is compared afterwards. Two rebuilds (``--variants``): ``state``, the state file only
(Icinga knows none of its objects and reads every record anyway), and ``objects``, with the
configuration of its objects in conf.d/ too (restored with /etc/icinga2), as a real master of
that size starts. The **baseline**, alternating with them in the same run: the same stack's first
start on an empty volume with nothing in Consul (a fresh prefix each time: a new CA).

**Outside the engine**: ``statesync run --role master`` (this checkout, the host's Python) on an
empty directory until its ready marker appears, against a real single Consul server with a data
dir on loopback holding the L tree (bench/icinga_bench.make_root plus the state file), beside
``statesync restore`` of the same snapshot into an empty directory (the one-shot's own time).

Writes bench/results/stack-rto.json (git-ignored); ``markdown(report)`` renders the tables of
docs/BENCH.md's section "A rebuilt master at L". Everything started is removed by ID or by its
compose project label; an engine found running is left running. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import icinga_bench  # noqa: E402
import icinga_state  # noqa: E402
from run import median, say  # noqa: E402

from tests.compose_support import prepare_stack_dir  # noqa: E402
from tests.engine import (  # noqa: E402
    CONSUL,
    DEBIAN,
    ICINGA_IMAGES,
    Compose,
    build_statesync_image,
    docker,
    ensure_engine,
    unique_name,
)
from tests.support import ConsulAgent, clean_env, find_consul, statesync_cmd, stop_process  # noqa: E402

SIDECAR_IMAGE = "statesync-bench:rto"
MASTER = "icinga-master"
STATE_DIR = "/data/var/lib/icinga2"
PHASES = ("restore", "ready", "icinga", "state", "activated", "api")
CA_FINGERPRINT = "openssl x509 -noout -fingerprint -sha256 -in /var/lib/icinga2/ca/ca.crt"


def _engine_time(stamp: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds) as a Unix time."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{frac or 0}")


def stamped_lines(cid: str) -> list[tuple[float, str]]:
    """A container's log lines (stdout and stderr) with the engine's receive times, in order."""
    proc = docker("logs", "-t", cid, check=False, timeout=120)
    out = []
    for line in (proc.stdout + proc.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        if stamp[:1].isdigit():
            out.append((_engine_time(stamp), text))
    return sorted(out)


def first(lines, pred, after: float = 0.0) -> float | None:
    return next((t for t, text in lines if t >= after and pred(text)), None)


def event(name: str):
    def pred(text: str) -> bool:
        try:
            return json.loads(text).get("event") == name
        except ValueError:
            return False
    return pred


def event_fields(lines, name: str) -> dict:
    return next((json.loads(text) for _, text in lines if event(name)(text)), {})


class Lab:
    """The consul stack and the master stacks of one image layout, in one work directory."""

    def __init__(self, work: Path, version: str, state_file: Path):
        self.image = ICINGA_IMAGES[version]
        self.dir = work / f"compose-{version}"
        self.secrets = prepare_stack_dir(self.dir, ("consul.yml", "master.yml", "icinga-start.sh"))
        self.password = (self.secrets / "icinga_api_password").read_text().strip()
        self.state_file = state_file
        self.objects_conf = state_file.parent / "statesync-bench-objects.conf"
        self.network = unique_name("rtonet")
        self.env = {"STATESYNC_NETWORK": self.network, "CONSUL_IMAGE": CONSUL, "ICINGA_IMAGE": self.image.tag,
                    "STATESYNC_IMAGE": SIDECAR_IMAGE, "ICINGA_API_PUBLISH": "127.0.0.1::5665",
                    "MASTER_NAME": MASTER}
        self.consul = Compose(self.dir / "consul.yml", env=self.env, project=unique_name("rtoconsul"))
        self.stacks: list[Compose] = []

    def master(self, prefix: str) -> Compose:
        stack = Compose(self.dir / "master.yml", env={**self.env, "STATESYNC_PREFIX": prefix},
                        project=unique_name("rtomaster"))
        self.stacks.append(stack)
        return stack

    def cleanup(self) -> None:
        for stack in (*self.stacks, self.consul):
            stack.cleanup()


def api_port(stack: Compose) -> int:
    out = docker("port", stack.container_id("icinga2"), "5665/tcp").stdout.split()
    return int(out[0].rsplit(":", 1)[1])


def api_answers(port: int, password: str, cafile: Path | None) -> bool:
    """/v1/objects/endpoints answers 200 to the sidecar's API user (within its permissions); with
    ``cafile`` over TLS verified against that CA (the old one), else unverified (a first start's is new)."""
    if cafile is None:
        ctx = ssl._create_unverified_context()
    else:
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.check_hostname = False  # the chain proves the old CA; the address is the published port's
        # Icinga's certificates carry no key identifiers, which Python 3.13's strict default refuses.
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    auth = base64.b64encode(f"statesync:{password}".encode()).decode()
    req = urllib.request.Request(f"https://127.0.0.1:{port}/v1/objects/endpoints",
                                 headers={"Authorization": f"Basic {auth}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=3) as r:
            return r.status == 200
    except (OSError, ValueError) as exc:
        if isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError):
            raise RuntimeError(f"Icinga's API presents a certificate the saved CA did not issue: {exc}") from exc
        return False


def timed_up(lab: Lab, stack: Compose, cafile: Path | None, timeout: float) -> dict:
    """``up -d`` of a master stack until its API answers; each phase in seconds after the ``up``."""
    t0 = time.time()
    stack.compose("up", "-d", "--no-color", timeout=timeout)
    up_s = time.time() - t0
    port = api_port(stack)
    deadline = time.monotonic() + timeout
    while not api_answers(port, lab.password, cafile):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Icinga's API did not answer within {timeout} s:\n{stack.logs()[-4000:]}")
        time.sleep(0.2)
    api_s = time.time() - t0
    # The API may answer before Icinga 2 logs that it activated every object: wait for that line.
    patience = time.monotonic() + 60
    while True:
        icinga = stamped_lines(stack.container_id("icinga2"))
        if any("Activated all objects" in text for _, text in icinga) or time.monotonic() > patience:
            break
        time.sleep(0.5)
    side = stamped_lines(stack.container_id("statesync"))
    at = {"restore": first(side, event("restored an empty root"), t0), "ready": first(side, event("ready"), t0),
          "icinga": first(icinga, lambda s: "Icinga application loader" in s, t0),
          "state": first(icinga, lambda s: "information/ConfigObject: Restored" in s, t0),
          "activated": first(icinga, lambda s: "Activated all objects" in s, t0)}
    phases = {"up": round(up_s, 3), **{k: None if v is None else round(v - t0, 3) for k, v in at.items()},
              "api": round(api_s, 3)}
    objects = next((text.split("Restored ", 1)[1].split()[0] for _, text in icinga
                    if "information/ConfigObject: Restored" in text), None)
    restored = event_fields(side, "restored an empty root")
    ready = event_fields(side, "ready")
    return {"phases": phases, "action": ready.get("action"), "restored_files": restored.get("files"),
            "restored_bytes": restored.get("bytes"), "icinga_restored_objects": objects and int(objects)}


def sh(stack: Compose, service: str, script: str) -> str:
    return stack.exec(service, "sh", "-c", script, timeout=120).stdout.strip()


OBJECTS_CONF = "/data/etc/icinga2/conf.d/statesync-bench-objects.conf"


def objects_conf(fixture: str) -> str:
    """Icinga 2 configuration of the fixture's hosts and services, by the names of its state file's
    records, so that Icinga restores their state into them as a real master of that size does.
    Active checks are off (a loaded 2-core machine cannot run 210,000); hosts carry no address,
    which keeps the image's conf.d/services.conf from applying its own services to them."""
    hosts, services = icinga_state.FIXTURES[fixture]
    kinds = ", ".join(f'"{k}"' for k, _ in icinga_state.KINDS[:services])
    lines = ["// bench/stack_rto.py: the objects of the state file of bench/icinga_state.py",
             f'template Host "statesync-bench-host" {{ check_command = "dummy"; enable_active_checks = false;'
             f" vars.statesync_bench_kinds = [ {kinds} ] }}"]
    lines += [f'object Host "host-{i:05d}.dc{i % 4 + 1}.example.com" {{ import "statesync-bench-host" }}'
              for i in range(hosts)]
    lines.append('apply Service for (kind in host.vars.statesync_bench_kinds) { check_command = "dummy";'
                 " enable_active_checks = false; assign where host.vars.statesync_bench_kinds }")
    return "\n".join(lines) + "\n"


def place_state(lab: Lab, stack: Compose, objects: bool, timeout: float) -> float:
    """Stop Icinga 2, rename the state file into the volume as Icinga writes it (with ``objects``
    the configuration of its objects too, else none), and wait for the running sidecar to commit
    it: the next snapshot holds it, whatever Icinga dumped at its stop. Returns how long Icinga's
    stop took (its own program state dump is most of it)."""
    t_stop = time.monotonic()
    docker("stop", "-t", "300", stack.container_id("icinga2"), timeout=360)
    stop_s = time.monotonic() - t_stop
    t0 = time.time()
    tmp = f"{STATE_DIR}/{icinga_state.STATE_FILE}.tmp.bench0"
    conf = (f"cp /src/{lab.objects_conf.name} {OBJECTS_CONF} && chown 5665:5665 {OBJECTS_CONF}" if objects
            else f"rm -f {OBJECTS_CONF}")
    docker("run", "--rm", "--network", "none", "-v", f"{stack.project}_icinga-master:/data",
           "-v", f"{lab.state_file.parent}:/src:ro", DEBIAN, "sh", "-c",
           f"{conf} && cp /src/{lab.state_file.name} {tmp} && chown 5665:5665 {tmp} && chmod 0600 {tmp}"
           f" && sync {tmp} && mv {tmp} {STATE_DIR}/{icinga_state.STATE_FILE}", timeout=timeout)
    size = lab.state_file.stat().st_size
    deadline = time.monotonic() + timeout
    # Icinga's own dump at its stop is committed first; wait for the commit that holds this file.
    while not any(t >= t0 and event("committed")(text) and json.loads(text).get("bytes", 0) >= size
                  for t, text in stamped_lines(stack.container_id("statesync"))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sidecar did not commit the state file within {timeout} s")
        time.sleep(1)
    return round(stop_s, 3)


def lose_volume(stack: Compose) -> None:
    stack.compose("stop", "-t", "60", timeout=180)  # the sidecar's last commit on SIGTERM
    stack.down(volumes=True)


def run_layout(lab: Lab, reps: int, variants: tuple[str, ...], timeout: float) -> dict:
    lab.consul.up(wait=120)
    stack = lab.master(f"bench/{lab.network}")
    say(f"== {lab.image.version}: the master's first start, then the state file in")
    stack.up(wait=None, timeout=timeout)
    deadline = time.monotonic() + timeout
    port = api_port(stack)
    while not api_answers(port, lab.password, None):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the master did not come up:\n{stack.logs()[-4000:]}")
        time.sleep(0.5)
    while stack.exec("statesync", "statesync", "check-ca", check=False, timeout=60).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sidecar did not publish the CA:\n{stack.logs()[-4000:]}")
        time.sleep(1)
    cafile = lab.dir / "old-ca.crt"
    cafile.write_text(sh(stack, "icinga2", "cat /var/lib/icinga2/ca/ca.crt") + "\n")
    old_fp = sh(stack, "icinga2", CA_FINGERPRINT)
    bare: list[dict] = []
    rebuilt: dict[str, list[dict]] = {v: [] for v in variants}
    prev: dict = {}  # the last rebuild's row: the next place_state stops its Icinga 2
    for i in range(reps):
        for variant in variants:
            stop_s = place_state(lab, stack, variant == "objects", timeout)
            if prev:
                prev["icinga_stop_s"] = stop_s
            lose_volume(stack)
            if variant == variants[0]:
                # The baseline between a loss and its rebuild: the same stack's first start, nothing in Consul.
                first_start = lab.master(f"bench/{lab.network}-bare{i}")
                row = timed_up(lab, first_start, None, timeout)
                row["new_ca"] = sh(first_start, "icinga2", CA_FINGERPRINT) != old_fp
                first_start.cleanup()
                bare.append(row)
                say(f"  [{lab.image.version}] first start {i}: {row['phases']}")
            prev = timed_up(lab, stack, cafile, timeout)
            prev["same_ca"] = sh(stack, "icinga2", CA_FINGERPRINT) == old_fp
            prev["state_file_bytes"] = int(sh(stack, "statesync", f"stat -c %s {STATE_DIR}/{icinga_state.STATE_FILE}"))
            rebuilt[variant].append(prev)
            say(f"  [{lab.image.version}] rebuild {i} ({variant}): {prev['phases']}, "
                f"{prev['restored_bytes']} bytes restored")
    prev["icinga_stop_s"] = place_state(lab, stack, False, timeout)
    rows = {"first_start": bare, **{f"rebuild_{v}": r for v, r in rebuilt.items()}}
    med = {kind: {p: median([r["phases"][p] for r in rs if r["phases"].get(p) is not None]) for p in ("up", *PHASES)}
           for kind, rs in rows.items()}
    for v, rs in rebuilt.items():
        med[f"rebuild_{v}"]["icinga_stop"] = median([r["icinga_stop_s"] for r in rs if "icinga_stop_s" in r])
    return {"image": lab.image.tag, **rows, "median": med}


def sidecar_alone(work: Path, state_file: Path, reps: int, timeout: float) -> dict:
    """``statesync run --role master`` on an empty root until its ready marker, beside
    ``statesync restore`` of the same snapshot, against a single Consul server on loopback."""
    root = work / "alone" / "var-lib-icinga2"
    icinga_bench.make_root(root)
    shutil.copyfile(state_file, root / icinga_state.STATE_FILE)
    agent = ConsulAgent(find_consul(), dev=False, workdir=str(work / "alone" / "consul"))
    agent.start(timeout=60)
    env = {**clean_env(), "CONSUL_HTTP_ADDR": agent.addr, "STATESYNC_PREFIX": "bench-rto", "STATESYNC_ROOT": str(root),
           "STATESYNC_NODE": MASTER, "STATESYNC_LOG_FORMAT": "json", "STATESYNC_ALLOW_PLAINTEXT_SECRETS": "true"}
    try:
        icinga_bench.run_statesync(["backup"], env, timeout)
        runs, restores = [], []
        for i in range(reps):
            target = work / "alone" / f"restore{i}"
            restores.append(round(icinga_bench.run_statesync(["restore"], {**env, "STATESYNC_ROOT": str(target)},
                                                             timeout)["seconds"], 3))
            shutil.rmtree(target)
            empty = work / "alone" / f"run{i}"
            empty.mkdir()
            ready = empty / ".statesync-ready"
            log = work / "alone" / f"run{i}.log"
            t0 = time.perf_counter()
            with open(log, "wb") as err:
                proc = subprocess.Popen(statesync_cmd("run", "--role", "master"),
                                        env={**env, "STATESYNC_ROOT": str(empty)}, cwd=str(REPO),
                                        stdout=subprocess.DEVNULL, stderr=err)
            try:
                while not ready.exists():
                    if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                        raise RuntimeError(f"statesync run did not get ready: {log.read_text()[-2000:]}")
                    time.sleep(0.01)
                runs.append(round(time.perf_counter() - t0, 3))
            finally:
                stop_process(proc, 60, signal.SIGTERM)
            shutil.rmtree(empty)
            say(f"  sidecar alone {i}: run until ready {runs[-1]:.2f} s, restore {restores[-1]:.2f} s")
        return {"run_until_ready_s": runs, "restore_s": restores,
                "median": {"run_until_ready_s": median(runs), "restore_s": median(restores)}}
    finally:
        agent.cleanup()


def _s(x) -> str:
    return "–" if x is None else f"{x:.1f} s"


LABELS = {"up": "`docker-compose up -d` returned", "restore": "sidecar: restore done",
          "ready": "sidecar: ready marker", "icinga": "Icinga 2 started (after icinga-start.sh's wait)",
          "state": "Icinga 2 read its state file", "activated": "Icinga 2 activated its objects",
          "api": "Icinga's API answers (over TLS checked against the old CA)",
          "icinga_stop": "then: `docker stop` of Icinga 2 (its program state dump)"}
KINDS = {"first_start": "first start: empty volume, nothing in Consul (new CA)",
         "rebuild_state": "rebuild: the state file, none of its objects configured",
         "rebuild_objects": "rebuild: the state file and its objects configured"}


def markdown(report: dict) -> str:
    """docs/BENCH.md's tables of section "A rebuilt master at L", from the JSON main wrote."""
    m = report["machine"]
    out = [f"Run of {report['started']} ({report['seconds']:.0f} s, {report['mode']}): {m['cpus']} CPUs, "
           f"load average {m['load_start']:.1f} at start, {m['load_end']:.1f} at end; fixture {report['fixture']}: "
           f"state file {report['state_file_bytes'] / 1e6:.1f} MB; median of {report['reps']} "
           "repetitions each, first starts and rebuilds alternating. Seconds after `docker-compose up -d`.", ""]
    for layout in report["layouts"]:
        kinds = [k for k in KINDS if k in layout["median"]]
        med = layout["median"]
        rebuilds = [r for k in kinds if k != "first_start" for r in layout[k]]
        restored = median([r["restored_bytes"] for r in rebuilds if r["restored_bytes"]])
        same = all(r["same_ca"] for r in rebuilds) and all(r["new_ca"] for r in layout["first_start"])
        out += [f"`{layout['image']}`: {restored / 1e6:.1f} MB restored;"
                f"{' the old CA after every rebuild, a new one at every first start' if same else ' **CA check failed**'}.",
                "", "| phase | " + " | ".join(KINDS[k] for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
        for p in ("up", *PHASES, "icinga_stop"):
            cells = [med[k].get(p) for k in kinds]
            if any(c is not None for c in cells):
                out.append(f"| {LABELS[p]} | " + " | ".join(_s(c) for c in cells) + " |")
        out.append("")
    alone = report.get("sidecar_alone")
    if alone:
        a = alone["median"]
        out += ["| outside the engine (this checkout, host Python), median | seconds |", "|---|---|",
                f"| `statesync run --role master` on an empty root until its ready marker | {a['run_until_ready_s']:.2f} |",
                f"| `statesync restore` of the same snapshot into an empty directory | {a['restore_s']:.2f} |", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=REPO / "bench/results/stack-rto.json")
    ap.add_argument("--quick", action="store_true", help="the tiny fixture, one repetition")
    ap.add_argument("--fixture", choices=sorted(icinga_state.FIXTURES), default="L")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layouts", default="2.16", help="comma-separated image layouts: 2.16, 2.14 (default 2.16)")
    ap.add_argument("--variants", default="state,objects",
                    help="rebuilds: state (the state file only), objects (and its objects configured in Icinga 2)")
    ap.add_argument("--no-engine", action="store_true", help="only the sidecar alone, outside the engine")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds any one wait may take")
    args = ap.parse_args(argv)
    fixture, reps = ("tiny", 1) if args.quick else (args.fixture, args.reps)
    started, t_start = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.monotonic()
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="stack-rto-"))
    report: dict = {"started": started, "mode": "quick" if args.quick else "full", "fixture": fixture, "reps": reps,
                    "layouts": []}
    try:
        state = work / "src" / icinga_state.STATE_FILE
        state.parent.mkdir()
        hosts, services = icinga_state.FIXTURES[fixture]
        report["state_file_bytes"] = icinga_state.dump(state, hosts, services)["bytes"]
        (state.parent / "statesync-bench-objects.conf").write_text(objects_conf(fixture))
        say(f"== the sidecar alone, outside the engine ({fixture})")
        report["sidecar_alone"] = sidecar_alone(work, state, reps, args.timeout)
        if not args.no_engine:
            ensure_engine()
            build_statesync_image(SIDECAR_IMAGE)
            try:
                for version in args.layouts.split(","):
                    lab = Lab(work, version.strip(), state)
                    try:
                        report["layouts"].append(run_layout(lab, reps, tuple(args.variants.split(",")), args.timeout))
                    finally:
                        lab.cleanup()
            finally:
                docker("image", "rm", SIDECAR_IMAGE, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = round(time.monotonic() - t_start, 1)
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_start": load_start,
                         "load_end": os.getloadavg()[0]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
