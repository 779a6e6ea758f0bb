#!/usr/bin/env python3
"""Icinga 2 state files (``/var/lib/icinga2/icinga2.state``) in Icinga's own format, for benchmarks.

    .venv/bin/python bench/icinga_state.py --fixture S --tick 0 --out /tmp/icinga2.state

The format, after Icinga 2's sources (github.com/Icinga/icinga2):

- ``lib/base/configobject.cpp``, ``ConfigObject::DumpObjects(filename, FAState)``: for every
  type that is a ``ConfigType``, for every object of it, one record
  ``JsonEncode({"type": <type name>, "name": <object name>, "update": Serialize(object, FAState)})``
  written with ``NetString::WriteStringToStream``; ``RestoreObjects`` reads them back with
  ``NetString::ReadStringFromStream`` and ``RestoreObject`` (``JsonDecode``, then
  ``Deserialize`` of ``update`` into the object named by type and name).
- ``lib/base/netstring.cpp``, ``NetString::WriteStringToStream``: ``<length>:<payload>,`` with
  the length in decimal bytes, no leading zeros, at most 9 digits (``ReadStringFromStream``).
- ``lib/base/serializer.cpp``, ``SerializeObject``: every field carrying the requested
  attribute (``[state]`` here, null and default values included), then ``"type": <type name>``
  appended; nested objects (the ``CheckResult`` of ``last_check_result``) serialise the same way.
  ``Dictionary`` is an ordered map, so ``JsonEncode`` writes keys sorted.
- ``lib/base/json.cpp``, ``JsonEncoder::EncodeNumber``: a double holding an integral value is
  written as an integer (``0``, not ``0.0``), others as the shortest round-trip double (as
  Python's ``repr``); Icinga's timestamps are ``Utility::GetTime()``, microseconds.
- ``lib/base/atomic-file.cpp``, ``AtomicFile`` (``DumpObjects`` of current releases writes
  through it; the older ``DumpObjects`` read for this called ``Utility::CreateTempFile(filename
  + ".XXXXXX")`` and renamed without an fsync): ``mkstemp(path + ".tmp.XXXXXX")``, ``chmod``
  0600, write, ``flush``, ``fsync``, close, ``rename`` over the state file. ``dump()`` does the
  same, six random characters included.
- The fields: ``lib/icinga/checkresult.ti`` (current: schedule_start/end, execution_start/end,
  command, exit_status, state, previous_hard_state, output, performance_data, active,
  check_source, scheduling_source, ttl, vars_before, vars_after) and ``lib/icinga/checkable.ti``
  (the stored version is an early 2.x one: next_check, check_attempt, state_raw, state_type,
  last_state_raw, last_hard_state_raw, last_state_type, last_reachable, last_check_result,
  last_state_change, last_hard_state_change, last_state_unreachable, acknowledgement,
  acknowledgement_expiry, force_next_check, force_next_notification, flapping_*). The fields
  of later releases (next_update, acknowledgement_last_change, previous_state_change,
  suppressed_notifications, flapping_buffer/index/current, last_state_up/down of host.ti,
  last_state_ok/warning/critical/unknown of service.ti, original_attributes and version of
  configobject.ti) follow 2.14 from memory of its .ti files, not checked against a source read
  here: a real 2.14 dump may carry a few more or fewer fields per record.

What is generated: a few Zone, Endpoint, ApiListener, IcingaApplication and CheckCommand
objects, then ``hosts`` Host objects (check ``hostalive``) and ``hosts x services`` Service
objects named ``<host>!<service>``, drawn from a set of monitoring-plugins checks (ping, disk,
load, procs, swap, users, http, ssh, ntp, apt, mem, ...) with their real output and
performance-data shapes. Not generated: Notification, Comment and Downtime objects, which a
real node also dumps (one record each, a notification per service in many setups).

Deterministic: ``tick`` n of seed s is always the same bytes. A tick is the dump five minutes
later: every check has run once more, so every record's timestamps, outputs and performance
data change (about 1 % of the checks also change state), while the objects, their names, order
and fields stay. Written streaming, one record at a time, in bounded memory.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

# (hosts, services per host); S and L are issue 17's fixtures (about 34 MB and 324 MB).
FIXTURES = {"tiny": (40, 5), "S": (2_000, 10), "L": (10_000, 20)}
INTERVAL = 300.0  # check_interval: one dump per tick, every check ran once in between
EPOCH = 1_764_547_200.0  # 2025-12-01T00:00:00Z, tick 0
APP_START = 1_762_130_583.412957  # when the node first started, 28 days earlier
STATE_FILE = "icinga2.state"
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode

ENDPOINTS = ("master1.example.com", "master2.example.com")
SATELLITES = tuple(f"satellite{i}.example.com" for i in range(1, 9))
PLUGINS = "/usr/lib/nagios/plugins/"
_TMP_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _num(x: float):
    """A double as Icinga's JsonEncoder writes it: integral values as integers."""
    return int(x) if x == int(x) else x


def _ts(x: float) -> float:
    return round(x, 6)


# -- the checks: command, output and performance data per service kind -------------------------

def _ping(r: random.Random, addr: str, st: int):
    rta = r.uniform(0.05, 40.0) if st == 0 else r.uniform(3000, 4800)
    pl = 0 if st == 0 else r.choice((20, 40, 60, 80, 100))
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return (["/usr/lib/nagios/plugins/check_ping", "-H", addr, "-c", "5000,100%", "-p", "5", "-w", "3000,80%"],
            f"PING {words} - Packet loss = {pl}%, RTA = {rta:.2f} ms",
            [f"rta={rta:.3f}000ms;3000.000000;5000.000000;0.000000", f"pl={pl}%;80;100;0"])


def _disk(r: random.Random, addr: str, st: int):
    mounts = ("/", "/boot", "/var", "/var/lib/icinga2", "/var/log", "/home", "/srv", "/tmp")
    parts, perf = [], []
    # Hosts are built from a few images: the same mounts and sizes over and over.
    layout = random.Random(addr).randrange(4)
    for k, m in enumerate(mounts[:3 + layout]):
        total = (1024, 4096, 20480, 51200, 102400, 512000, 20480, 8192)[(k + layout) % 8]
        used = int(total * (r.uniform(0.1, 0.79) if st == 0 else r.uniform(0.81, 0.99)))
        free = total - used
        parts.append(f"{m} {free} MiB ({100 * free / total:.0f}% inode={r.randint(40, 99)}%)")
        perf.append(f"{m}={used}MiB;{int(total * .8)};{int(total * .9)};0;{total}")
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_disk", "-c", "10%", "-w", "20%", "-X", "none", "-X", "tmpfs", "-X", "sysfs",
             "-X", "proc", "-X", "devtmpfs", "-X", "devfs", "-X", "mtmfs", "-X", "tracefs", "-X", "cgroup",
             "-X", "fuse.gvfsd-fuse", "-X", "fuse.gvfs-fuse-daemon", "-X", "fdescfs", "-X", "overlay", "-X", "nsfs",
             "-X", "squashfs", "-m"],
            f"DISK {words} - free space: " + " ".join(parts) + ";", perf)


def _load(r: random.Random, addr: str, st: int):
    l1 = r.uniform(0.0, 4.0) if st == 0 else r.uniform(5.0, 16.0)
    l5, l15 = l1 * r.uniform(0.7, 1.2), l1 * r.uniform(0.6, 1.1)
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_load", "-c", "10,6,4", "-w", "5,4,3"],
            f"{words} - load average: {l1:.2f}, {l5:.2f}, {l15:.2f}",
            [f"load1={l1:.3f};5.000;10.000;0;", f"load5={l5:.3f};4.000;6.000;0;",
             f"load15={l15:.3f};3.000;4.000;0;"])


def _procs(r: random.Random, addr: str, st: int):
    n = r.randint(90, 240) if st == 0 else r.randint(251, 600)
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_procs", "-c", "400", "-w", "250"], f"PROCS {words}: {n} processes",
            [f"procs={n};250;400;0;"])


def _swap(r: random.Random, addr: str, st: int):
    total = r.choice((1023, 2047, 4095, 8191))
    free = int(total * (r.uniform(0.6, 1.0) if st == 0 else r.uniform(0.0, 0.2)))
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_swap", "-c", "25%", "-w", "50%"],
            f"SWAP {words} - {100 * free // total}% free ({free} MiB out of {total} MiB)",
            [f"swap={free * 1048576}B;{total * 524288};{total * 262144};0;{total * 1048576}"])


def _users(r: random.Random, addr: str, st: int):
    n = r.randint(0, 5) if st == 0 else r.randint(21, 60)
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_users", "-c", "50", "-w", "20"], f"USERS {words} - {n} users currently logged in",
            [f"users={n};20;50;0"])


def _http(r: random.Random, addr: str, st: int):
    t, size = r.uniform(0.002, 0.9), r.randint(600, 250_000)
    if st == 0:
        out = f"HTTP OK: HTTP/1.1 200 OK - {size} bytes in {t:.3f} second response time"
    else:
        out = f"HTTP CRITICAL: HTTP/1.1 503 Service Unavailable - {size} bytes in {t:.3f} second response time"
    return ([PLUGINS + "check_http", "-H", addr, "-I", addr, "-t", "10", "--sni", "-u", "/"], out,
            [f"time={t:.6f}s;;;0.000000;10.000000", f"size={size}B;;;0"])


def _ssh(r: random.Random, addr: str, st: int):
    t = r.uniform(0.003, 0.2)
    out = ("SSH OK - OpenSSH_9.2p1 Debian-2+deb12u3 (protocol 2.0)" if st == 0
           else "CRITICAL - Socket timeout after 10 seconds")
    return ([PLUGINS + "check_ssh", "-t", "30", addr], out, [f"time={t:.6f}s;;;0.000000;10.000000"])


def _ntp(r: random.Random, addr: str, st: int):
    off = r.uniform(-0.004, 0.004) if st == 0 else r.uniform(60.5, 200.0)
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_ntp_time", "-H", "pool.ntp.org"], f"NTP {words}: Offset {off:.9g} secs",
            [f"offset={off:.9g}s;60.000000;120.000000;"])


def _apt(r: random.Random, addr: str, st: int):
    up, crit = r.randint(0, 40), (0 if st == 0 else r.randint(1, 9))
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_apt"], f"APT {words}: {up} packages available for upgrade ({crit} critical updates).",
            [f"available_upgrades={up};;;0", f"critical_updates={crit};;;0"])


def _mem(r: random.Random, addr: str, st: int):
    total = r.choice((2048, 4096, 8192, 16384, 32768, 65536))
    used = int(total * (r.uniform(0.2, 0.8) if st == 0 else r.uniform(0.9, 0.99)))
    cache, buf = int((total - used) * r.uniform(0.1, 0.6)), r.randint(10, 900)
    words = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[st]
    return ([PLUGINS + "check_mem", "-u", "-C", "-w", "80", "-c", "90"],
            f"{words} - {100 * used / total:.2f}% ({used * 1024} kB) used!",
            [f"TOTAL={total * 1024}KB;;;;", f"USED={used * 1024}KB;{int(total * 819.2)};{int(total * 921.6)};;",
             f"FREE={(total - used) * 1024}KB;;;;", f"CACHES={cache * 1024}KB;;;;", f"BUFFERS={buf * 1024}KB;;;;"])


def _cluster(r: random.Random, addr: str, st: int):
    lag = r.uniform(0.0, 2.0)
    return (None, f"Zone '{addr}' is connected. Log lag: {lag:.2f} milliseconds",
            [f"slave_lag={lag / 1000:.6f}s;;;;"])


def _icinga(r: random.Random, addr: str, st: int):
    up, lat = r.uniform(3600, 9e6), r.uniform(0.0001, 0.01)
    n = [r.randint(0, 200) for _ in range(8)]
    return (None, f"Icinga 2 has been running for {up / 86400:.0f} days. Version: r2.14.5-1",
            [f"active_host_checks={n[0] / 60:.6f}", "passive_host_checks=0", f"active_host_checks_1min={n[0]}",
             "passive_host_checks_1min=0", f"active_host_checks_5min={n[1]}", "passive_host_checks_5min=0",
             f"active_service_checks={n[2] / 60:.6f}", f"active_service_checks_1min={n[2]}",
             f"active_service_checks_5min={n[3]}", f"min_latency={lat / 10:.6f}", f"max_latency={lat * 40:.6f}",
             f"avg_latency={lat:.6f}", f"min_execution_time={lat:.6f}", f"max_execution_time={lat * 900:.6f}",
             f"avg_execution_time={lat * 30:.6f}", f"num_services_ok={n[4]}", f"num_services_warning={n[5]}",
             f"num_services_critical={n[6]}", f"uptime={up:.6f}", f"current_pending_callbacks={n[7]}"])


KINDS = (("ping4", _ping), ("disk", _disk), ("load", _load), ("procs", _procs), ("swap", _swap),
         ("users", _users), ("http", _http), ("ssh", _ssh), ("ntp_time", _ntp), ("apt", _apt),
         ("mem", _mem), ("cluster-zone", _cluster), ("icinga", _icinga), ("disk /var", _disk),
         ("http-api", _http), ("ping6", _ping), ("load-5", _load), ("procs-zombie", _procs),
         ("swap-usage", _swap), ("ssh-backup", _ssh))
HOST_KIND = ("hostalive", _ping)


# -- records -------------------------------------------------------------------------------------

def _checkable(static: random.Random, r: random.Random, tick: int, kind, addr: str, source: str,
               host: bool, obj_type: str) -> dict:
    """One Host or Service ``update``: its [state] fields, the last check result nested."""
    phase = static.uniform(0.0, INTERVAL)
    base_state = 0 if static.random() < 0.93 else static.choice((1, 2, 3)) if not host else 1
    # Unchanged since the objects were created keeps checkable.ti's default, the
    # application's start time, shared by most objects of a long-running node.
    since = APP_START if static.random() < 0.7 else _ts(EPOCH - static.uniform(3600, 90 * 86400))
    ack = 1 if base_state and static.random() < 0.3 else 0
    # A tick is one more run of every check; a few change state.
    changed = r.random() < 0.01
    st = (r.choice((0, 1, 2)) if changed else base_state) if not host else (1 - base_state if changed else base_state)
    sched_start = EPOCH + tick * INTERVAL + phase + r.uniform(-0.5, 0.5)
    exec_start = sched_start + r.uniform(0.0001, 0.05)
    exec_end = exec_start + r.uniform(0.002, 3.0)
    sched_end = exec_end + r.uniform(0.00005, 0.002)
    last_change = sched_end if changed else since
    command, output, perf = kind[1](r, addr, min(st, 3))
    if command is None:
        command = kind[0]
    state_type = 1
    vars_ = {"attempt": 1, "reachable": True, "state": st, "state_type": state_type}
    cr = {"active": True, "check_source": source, "command": command,
          "execution_end": _ts(exec_end), "execution_start": _ts(exec_start), "exit_status": min(st, 3),
          "output": output, "performance_data": perf,
          "previous_hard_state": base_state if changed else 99 if r.random() < 0.002 else st,
          "schedule_end": _ts(sched_end), "schedule_start": _ts(sched_start), "scheduling_source": source,
          "state": st, "ttl": 0, "type": "CheckResult",
          "vars_after": vars_, "vars_before": {**vars_, "state": base_state if changed else st}}
    next_check = sched_start + INTERVAL
    up = {"acknowledgement": ack, "acknowledgement_expiry": 0,
          "acknowledgement_last_change": _ts(since + 120.5) if ack else 0,
          "check_attempt": 1, "flapping": False, "flapping_buffer": 0, "flapping_current": 0, "flapping_index": 0,
          "flapping_last_change": 0, "force_next_check": False, "force_next_notification": False,
          "last_check_result": cr, "last_hard_state_change": _ts(last_change), "last_hard_state_raw": st,
          "last_reachable": True, "last_state_change": _ts(last_change), "last_state_raw": st,
          "last_state_type": state_type, "last_state_unreachable": 0, "next_check": _ts(next_check),
          "next_update": _ts(next_check + INTERVAL * 2 + 30), "original_attributes": None,
          "previous_state_change": since if since == APP_START else _ts(since - static.uniform(600, 86400)),
          "state_raw": st, "state_type": state_type,
          "suppressed_notifications": 0, "type": obj_type, "version": 0}
    now = _ts(sched_end)
    if host:
        up["last_state_up"] = now if st == 0 else _ts(since)
        up["last_state_down"] = now if st == 1 else 0
    else:
        # Most services were never anything but OK: those fields stay 0 until they are.
        seen = (True, static.random() < 0.15, static.random() < 0.1, static.random() < 0.03)
        for i, name in enumerate(("ok", "warning", "critical", "unknown")):
            up[f"last_state_{name}"] = now if st == i else (_ts(since - 600 * (i + 1)) if seen[i] else 0)
    return up


def _plain(obj_type: str) -> dict:
    return {"original_attributes": None, "type": obj_type, "version": 0}


def records(hosts: int, services: int, seed: int, tick: int) -> Iterator[dict]:
    """The dump's records in order: {"name", "type", "update"} per config object."""
    static = random.Random(seed)
    r = random.Random(seed * 1_000_003 + tick + 1)
    for name in ("ApiListener",):
        yield {"name": "api", "type": name, "update": _plain(name)}
    for kind, _ in (HOST_KIND, *KINDS):
        yield {"name": kind, "type": "CheckCommand", "update": _plain("CheckCommand")}
    for ep in ENDPOINTS + SATELLITES:
        yield {"name": ep, "type": "Endpoint", "update": _plain("Endpoint")}
    for i in range(hosts):
        name = f"host-{i:05d}.dc{i % 4 + 1}.example.com"
        addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        source = SATELLITES[i % len(SATELLITES)]
        yield {"name": name, "type": "Host",
               "update": _checkable(static, r, tick, HOST_KIND, addr, source, True, "Host")}
    yield {"name": "app", "type": "IcingaApplication", "update": _plain("IcingaApplication")}
    for i in range(hosts):
        host = f"host-{i:05d}.dc{i % 4 + 1}.example.com"
        addr = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        source = SATELLITES[i % len(SATELLITES)]
        for j in range(services):
            kind = KINDS[j % len(KINDS)]
            yield {"name": f"{host}!{kind[0]}", "type": "Service",
                   "update": _checkable(static, r, tick, kind, addr, source, False, "Service")}
    for zone in ("master", "global-templates", "director-global", *(f"satellite-zone{i}" for i in range(1, 5))):
        yield {"name": zone, "type": "Zone", "update": _plain("Zone")}


def frame(record: dict) -> bytes:
    """One record as NetString::WriteStringToStream writes it."""
    payload = _dumps(record).encode()
    return b"%d:%s," % (len(payload), payload)


def write(fh, hosts: int, services: int, seed: int = 1, tick: int = 0) -> dict:
    """Stream the dump into the binary file ``fh``; returns the record count and size."""
    count = size = 0
    buf: list[bytes] = []
    pending = 0
    for rec in records(hosts, services, seed, tick):
        data = frame(rec)
        buf.append(data)
        pending += len(data)
        count += 1
        if pending >= 1 << 20:
            fh.write(b"".join(buf))
            size += pending
            buf, pending = [], 0
    fh.write(b"".join(buf))
    return {"objects": count, "bytes": size + pending}


def dump(path: Path, hosts: int, services: int, seed: int = 1, tick: int = 0) -> dict:
    """Replace ``path`` as Icinga 2's AtomicFile does: mkstemp(<path>.tmp.XXXXXX), chmod 0600,
    write, flush, fsync, close, rename."""
    path = Path(path)
    # mkstemp(3)'s six X, not Python's eight: exclude patterns are written against Icinga's names.
    while True:
        tmp = str(path.parent / (path.name + ".tmp." + "".join(random.choices(_TMP_CHARS, k=6))))
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            stats = write(fh, hosts, services, seed, tick)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return {**stats, "tmp": os.path.basename(tmp)}


def parse(data: bytes) -> Iterator[dict]:
    """The records of a state file, read as NetString::ReadStringFromStream and JsonDecode do."""
    pos, end = 0, len(data)
    while pos < end:
        colon = data.index(b":", pos, pos + 16)
        digits = data[pos:colon]
        if not digits.isdigit() or len(digits) > 9 or (len(digits) > 1 and digits[:1] == b"0"):
            raise ValueError(f"invalid netstring length at byte {pos}: {digits[:16]!r}")
        n = int(digits)
        if data[colon + 1 + n:colon + 2 + n] != b",":
            raise ValueError(f"netstring at byte {pos}: missing ','")
        doc = json.loads(data[colon + 1:colon + 1 + n])
        if not isinstance(doc, dict):
            raise ValueError(f"netstring at byte {pos}: not a JSON object")
        yield doc
        pos = colon + 2 + n


def zlib_ratio(path: Path, level: int = 6) -> float:
    """Size over zlib-compressed size, streamed."""
    comp, raw, out = zlib.compressobj(level), 0, 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            raw += len(block)
            out += len(comp.compress(block))
    out += len(comp.flush())
    return raw / out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", choices=sorted(FIXTURES), default="S")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tick", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ratio", action="store_true", help="also report the zlib (level 6) ratio")
    args = ap.parse_args(argv)
    hosts, services = FIXTURES[args.fixture]
    t0 = time.perf_counter()
    stats = dump(args.out, hosts, services, args.seed, args.tick)
    seconds = time.perf_counter() - t0
    line = (f"{args.out}: {stats['objects']} objects, {stats['bytes']} bytes ({stats['bytes'] / 1e6:.1f} MB) "
            f"in {seconds:.1f} s")
    if args.ratio:
        line += f", zlib ratio {zlib_ratio(args.out):.1f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
