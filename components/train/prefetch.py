"""Run an iterator in a background thread, a few items ahead of its consumer.

Reading Parquet and building batches (pyarrow, NumPy, torch ops that release the GIL) then overlaps
the training step. One producer thread: the items arrive in the iterator's own order, so prefetching
changes nothing about what the loop sees.
"""
from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


class Prefetch(Iterator[T]):
    def __init__(self, items: Iterable[T], depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        # the thread holds the queue and the event, not this object: a consumer that drops it unfinished
        # (an exception in the loop) stops the producer through __del__
        self._thread = threading.Thread(target=_produce, args=(items, self._queue, self._stop), daemon=True,
                                        name="nmtrec-prefetch")
        self._thread.start()

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._done = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the producer (a consumer that leaves early: a stopped epoch, a new held-out pass)."""
        self._done = True
        self._stop.set()
        self._thread.join()

    def __del__(self):
        self._stop.set()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _produce(items: Iterable, out: queue.Queue, stop: threading.Event) -> None:
    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if not put(item):
                return
        put(_END)
    except BaseException as e:  # handed to the consumer, raised there
        put(_Failure(e))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()
