"""Prometheus metrics of one statesync process, in a registry of its own."""
from __future__ import annotations

import platform
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# Prometheus' *_build_info convention: constant 1, the facts in labels, joined onto other series.
build_info = Gauge("statesync_build_info", "statesync's version and the Python running it (always 1)",
                   ["version", "python"], registry=REGISTRY)

commits = Counter("statesync_commits", "Snapshots committed", registry=REGISTRY)
commit_failures = Counter("statesync_commit_failures", "Commits that failed and will be retried", registry=REGISTRY)
# The failing path is in the log and in /healthz's body, not in a label: one series per path would not stay bounded.
consecutive_failures = Gauge("statesync_consecutive_failures", "Sync cycles failed in a row since the last success",
                             registry=REGISTRY)
last_commit = Gauge("statesync_last_commit_timestamp_seconds", "Unix time of the last successful commit "
                    "(from the head snapshot's creation time until this process commits)", registry=REGISTRY)
commit_seconds = Histogram("statesync_commit_duration_seconds", "Time to commit one snapshot",
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
uploaded_bytes = Counter("statesync_uploaded_bytes", "Chunk bytes uploaded to Consul", registry=REGISTRY)
chunks_uploaded = Counter("statesync_chunks_uploaded", "Chunks uploaded to Consul", registry=REGISTRY)
chunks_reused = Counter("statesync_chunks_reused", "Chunks a commit found already stored", registry=REGISTRY)
restores = Counter("statesync_restores", "Snapshots restored into the root", registry=REGISTRY)
purges = Counter("statesync_guard_purges", "Certificate sets quarantined by the CA guard", registry=REGISTRY)
untrusted_cas = Counter("statesync_guard_untrusted_ca", "Published CA certificates the guard would have purged for "
                        "but that are no CA worth acting on (not a CA, bad self-signature, outside validity)",
                        registry=REGISTRY)
trigger_ready = Gauge("statesync_guard_trigger_ready", "1 while the CA guard's restart trigger passes its preflight "
                      "check, 0 while it does not (the guard then quarantines nothing)", registry=REGISTRY)
guard_watching = Gauge("statesync_guard_watching", "1 while the CA guard's blocking query on the published CA "
                       "gets answers, 0 while Consul is away or refuses it (a CA change then goes unnoticed)",
                       registry=REGISTRY)
guard_state = Gauge("statesync_guard_state", "CA guard verdict: 1 for the current one", ["state"], registry=REGISTRY)
ready = Gauge("statesync_ready", "1 once the start-up restore has finished", registry=REGISTRY)
ca_conflict = Gauge("statesync_ca_conflict", "1 while a master does not publish its CA because another key is "
                    "published without an operator's accept-ca; 0 otherwise", registry=REGISTRY)
damage = Counter("statesync_damage", "Damage found and handled: head-missing (re-pointed to the newest snapshot)",
                 ["kind"], registry=REGISTRY)
suspicious_drops = Counter("statesync_suspicious_drops", "Commits refused because the tree shrank by more than "
                           "max_drop since the last snapshot", registry=REGISTRY)
enrol_registrations = Counter("statesync_enrol_registrations", "Registrations this satellite wrote to Consul",
                              registry=REGISTRY)
enrol_state = Gauge("statesync_enrol_state", "Satellite enrolment state: 1 for the current one", ["state"],
                    registry=REGISTRY)
enrol_rejected = Counter("statesync_enrol_rejected", "Registrations or certificate requests the master refused, "
                         "each counted once, by kind (registration, request)", ["kind"], registry=REGISTRY)
enrol_signed = Counter("statesync_enrol_signed", "Certificate requests the master signed", registry=REGISTRY)
enrol_stages = Counter("statesync_enrol_stages", "Config package stages of the accepted satellites, by result "
                       "(ok, failed)", ["result"], registry=REGISTRY)
enrol_stage_failed = Gauge("statesync_enrol_stage_failed", "1 while the last stage of the accepted satellites "
                           "failed (Icinga 2 kept the running config), 0 otherwise", registry=REGISTRY)
enrol_accepted = Gauge("statesync_enrol_accepted", "Satellites accepted: rendered into the active config package",
                       registry=REGISTRY)

ENROL_STATES = ("no-request", "waiting-for-ca", "registered", "enrolled", "other-ca")
GUARD_STATES = ("match", "renewed-same-key", "mismatch", "cannot-tell")


class _StoreCollector:
    """Exports the counters a Store keeps itself (requests, errors, writes)."""

    def __init__(self, store) -> None:
        self.store = store

    def collect(self):
        from prometheus_client.core import CounterMetricFamily
        s = self.store.stats
        yield CounterMetricFamily("statesync_consul_requests", "HTTP requests sent to Consul", value=s.requests)
        yield CounterMetricFamily("statesync_consul_errors", "Failed requests to Consul", value=s.errors)
        yield CounterMetricFamily("statesync_kv_writes", "KV operations that wrote", value=s.kv_writes)


def watch_store(store) -> None:
    """Export ``store``'s own counters (once per process)."""
    REGISTRY.register(_StoreCollector(store))


def set_guard_state(state: str) -> None:
    """Mark ``state`` as the guard's current verdict (others drop to 0)."""
    for s in GUARD_STATES:
        guard_state.labels(state=s).set(1 if s == state else 0)


def set_enrol_state(state: str) -> None:
    for s in ENROL_STATES:
        enrol_state.labels(state=s).set(1 if s == state else 0)


def record_commit(seconds: float, chunks_written: int, chunks_reused_: int, bytes_written: int,
                  when: float) -> None:
    commits.inc()
    commit_seconds.observe(seconds)
    chunks_uploaded.inc(chunks_written)
    chunks_reused.inc(chunks_reused_)
    uploaded_bytes.inc(bytes_written)
    last_commit.set(when)


def record_head(created: str) -> None:
    """Set the last commit time from the head snapshot's ``created`` (ISO 8601), so that a restarted
    sidecar reports the commit its predecessor made instead of 0 (which alerts as "never committed").
    An unreadable time changes nothing."""
    try:
        when = datetime.fromisoformat(created).timestamp()
    except (TypeError, ValueError):
        return
    last_commit.set(when)


def set_build_info(version: str) -> None:
    """Export ``statesync_build_info``; the version comes from the caller, since metrics, the base
    layer, imports nothing of statesync (not even its ``__init__``)."""
    build_info.labels(version=version, python=platform.python_version()).set(1)
