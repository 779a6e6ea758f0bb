"""Streaming many values into Consul while the caller is still producing them."""
from __future__ import annotations

import queue
import threading

from ..errors import StoreError
from .client import Op
from .settings import PUT_THRESHOLD
from .store import Store, check_fenced_size


class BulkWriter:
    """Writes many pairs while the caller is still producing them (a scan reading files).

    ``add`` fills transactions exactly as ``put_many`` does; each full transaction, and each
    large value (by plain PUT), is sent by one background thread over its own keep-alive
    connection while the caller goes on, with at most ``depth`` requests waiting. The last,
    partly filled transaction is *not* sent: the caller sends what is not in ``sent`` (the
    keys written, or the ``tag`` each was added with) along with its own writes. The first failure is raised by the next ``add``
    or by ``close``. ``fence`` operations open every transaction. Not atomic as a whole.
    Use it as a context manager, or call ``close`` (which waits for the queued requests).
    """

    def __init__(self, store: Store, fence: tuple[Op, ...] = (), depth: int = 2):
        self.store = store
        self.fence = tuple(fence)
        self.sent: set[str] = set()
        self.sent_bytes = 0  # of the values in ``sent``
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._fence_size = sum(op.body_size() for op in self.fence)
        self._max_ops = store.settings.txn_max_ops - len(self.fence)
        self._batch: list[Op] = []
        self._tags: list[str] = []
        self._size = self._fence_size

    def add(self, key: str, value: bytes, tag: str | None = None) -> None:
        """Queue ``key``; once written, ``tag`` (default the key) joins ``sent``: a caller that
        names its values by a part of the key holds no second string per value."""
        self._raise()
        tag = key if tag is None else tag
        if len(value) > PUT_THRESHOLD and not self.fence:
            self._submit(("put", key, value, tag, len(value)))
            return
        check_fenced_size(key, value)
        op = Op("set", key, value)
        if self._batch and (len(self._batch) >= self._max_ops
                            or self._size + op.body_size() > self.store.settings.txn_max_body):
            self._submit(("txn", [*self.fence, *self._batch], self._tags, sum(len(op.value or b"") for op in self._batch)))
            self._batch, self._tags, self._size = [], [], self._fence_size
        self._batch.append(op)
        self._tags.append(tag)
        self._size += op.body_size()

    def close(self) -> None:
        """Wait until every queued request is done; raise the first failure."""
        self._stop()
        self._raise()

    def __enter__(self) -> "BulkWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:  # the caller failed: stop sending, and let its exception through
            if self._error is None:
                self._error = StoreError("bulk write abandoned")
            self._stop()

    def _submit(self, job: tuple) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="statesync-bulk-writer", daemon=True)
            self._thread.start()
        while True:
            try:
                self._queue.put(job, timeout=0.5)
                return
            except queue.Full:
                self._raise()

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue  # failed: drain what was queued without sending it
            try:
                if job[0] == "put":
                    self.store.put(job[1], job[2])
                    self.sent.add(job[3])
                else:
                    self.store.txn(job[1])
                    self.sent.update(job[2])
                self.sent_bytes += job[-1]
            except BaseException as exc:  # handed to the producer by add() or close()
                self._error = exc
