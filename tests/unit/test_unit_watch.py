"""The index rule of every blocking-query watch (consul/watch.advance), after consul-template's view.go."""
from __future__ import annotations

import threading

from statesync.consul.backoff import Backoff
from statesync.consul.watch import Step, Watch, advance
from statesync.errors import ConsulUnavailable


def test_the_first_answer_is_news():
    assert advance(0, 17) == Step(17, True)


def test_an_answer_at_the_index_waited_on_is_the_wait_running_out():
    assert advance(17, 17) == Step(17, False)


def test_a_higher_index_is_news_and_is_waited_on_next():
    assert advance(17, 42) == Step(42, True)


def test_an_index_that_went_back_starts_the_watch_over():
    assert advance(42, 5) == Step(0, False)
    assert advance(0, 5) == Step(5, True)  # and the next answer is news


def test_an_index_of_zero_is_taken_as_one_so_the_next_query_blocks():
    assert advance(0, 0) == Step(1, True)
    assert advance(1, 0) == Step(1, False)  # not "went back": that would query at 0, a hot loop


class _Script:
    """Answers a watch's queries from a list, each item an (index, value) or an exception; then stops
    the watch (answering "nothing new", which is not recorded as asked)."""

    def __init__(self, answers, stop: threading.Event):
        self.answers, self.stop, self.asked = list(answers), stop, []

    def __call__(self, index):
        if not self.answers:
            self.stop.set()
            return index, None
        self.asked.append(index)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_watch_tells_each_change_once_and_starts_over_when_the_index_goes_back():
    stop = threading.Event()
    script = _Script([(10, "a"), (10, "a"), (12, "b"), (3, "c"), (4, "c"), (6, "d")], stop)
    seen = []
    Watch(script, lambda v, first: seen.append((v, first)), stop, Backoff(0.0, 0.0), "a key", "k").run()
    assert script.asked == [0, 10, 10, 12, 0, 4]
    assert seen == [("a", True), ("b", False), ("c", False), ("d", False)]


def test_a_failing_watch_pauses_by_its_backoff_and_keeps_its_index():
    stop = threading.Event()
    waits = []
    stop.wait = lambda t: waits.append(t)  # the pauses, without sleeping them
    script = _Script([(10, "a"), ConsulUnavailable("away"), ConsulUnavailable("away"), (11, "b"), (12, "c")], stop)
    seen = []
    Watch(script, lambda v, first: seen.append(v), stop, Backoff(0.25, 5.0), "a key", "k").run()
    assert waits == [0.25, 0.5]
    assert script.asked == [0, 10, 10, 10, 11]
    assert seen == ["a", "b", "c"]


def test_a_change_whose_handling_failed_is_looked_at_again():
    stop = threading.Event()
    stop.wait = lambda t: None
    script = _Script([(10, "a"), (10, "a")], stop)
    tries = []

    def on_news(value, first):
        tries.append(value)
        if len(tries) == 1:
            raise ConsulUnavailable("away")
    Watch(script, on_news, stop, Backoff(0.25, 5.0), "a key", "k").run()
    assert script.asked == [0, 0]
    assert tries == ["a", "a"]


def test_a_watch_hands_quiet_answers_to_on_quiet_and_tells_its_trouble_once_per_change_of_state():
    stop = threading.Event()
    down = ConsulUnavailable("away")
    script = _Script([(10, "a"), (10, "a"), down, down, (10, "a"), (11, "b")], stop)
    seen, quiet, trouble = [], [], []
    Watch(script, lambda v, first: seen.append(v), stop, Backoff(0.0, 0.0), "a key", "k",
          on_quiet=quiet.append, on_trouble=trouble.append).run()
    assert seen == ["a", "b"]
    assert quiet == ["a", "a"]  # the wait ran out twice: once before the failures, once after
    assert trouble == [down, down, None]


def test_a_new_connection_consul_closes_unanswered_is_named_as_its_per_address_limit():
    import http.client

    from statesync.consul.settings import Endpoint
    from statesync.consul.transport import refused
    from statesync.errors import ConsulRefused
    at = Endpoint("http", "127.0.0.1", 8500)
    for closed in (http.client.RemoteDisconnected("closed"), ConnectionResetError(104, "reset"), BrokenPipeError()):
        named = refused(at, closed)
        assert isinstance(named, ConsulRefused) and "http_max_conns_per_client" in str(named)
    away = ConnectionRefusedError(111, "refused")
    assert refused(at, away) is away  # nothing listens: Consul is away, not refusing this address
