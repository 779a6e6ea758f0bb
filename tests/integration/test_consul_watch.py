"""A blocking-query watch on a real Consul keeps waking after Consul's index went back.

A dev agent keeps its raft log in memory: restarted on the same ports, it starts its indexes
over, far below those the watch has seen. A watch that kept waiting on its old index would
block until the new agent's index passed it, and miss every change until then."""
from __future__ import annotations

import threading

from statesync.config import parse_addr
from statesync.consul.backoff import Backoff
from statesync.consul.settings import ConsulSettings
from statesync.consul.store import Store
from statesync.consul.watch import Watch, key_query

from ..support import ConsulAgent, wait_for

KEY = "watch/key"
PATIENCE = 60.0  # only to stop a hang: the watch asks again every second


def test_a_watch_keeps_waking_after_a_restarted_dev_agent_started_its_index_over(consul_bin, tmp_path):
    agent = ConsulAgent(consul_bin, dev=True, workdir=str(tmp_path / "consul")).start()
    stop = threading.Event()
    thread = None
    try:
        store = Store(ConsulSettings(endpoints=(parse_addr(agent.addr),), timeout=5))
        for i in range(60):  # an index the restarted agent will not reach while the test runs
            store.put(f"watch/filler/{i}", b"x")
        seen: list[bytes | None] = []
        watch = Watch(key_query(store, KEY, wait_s=1), lambda pair, first: seen.append(pair and pair.value),
                      stop, Backoff(0.05, 0.5), "the test key", KEY)
        thread = threading.Thread(target=watch.run, daemon=True)
        thread.start()
        store.put(KEY, b"before")
        wait_for(lambda: b"before" in seen, PATIENCE, what="the watch seeing the first value")
        old_index = watch.index

        agent.stop()
        agent.start()
        assert store.wait(KEY, 0, 1)[0] < old_index, "the restarted agent's index did not go back"

        for value in (b"after-1", b"after-2"):
            store.put(KEY, value)
            wait_for(lambda v=value: v in seen, PATIENCE, what=f"the watch seeing {value!r} after the restart",
                     details=lambda: f"seen {seen}, waiting on index {watch.index} (before the restart {old_index})")
        assert watch.index < old_index
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
        agent.cleanup()
