"""Tentative answers' tails, flushed off the model thread.

A semantic ear's partial block (the audio since its last whole block) is an encoder call,
~11 ms on one thread. A tentative answer hands the batcher a callable that flushes it on
a copy of the ear's stream; :class:`TailThreads` runs it at once on its own threads (two:
these machines have two cores), timed into the answer's ``flush_ms``, while the model
thread serves the other sessions' rows; the row that waits for it is skipped until the
future is done, and ``on_done`` wakes the model thread then.

    tails = TailThreads(on_done=wake_the_model_thread)
    future = tails.submit(answer, tail)   # None for no tail; future.result(): [K, T]
    tails.shutdown()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from voxloop.realtime.engines.answers import Answer

TAIL_THREADS = 2  # ears' partial blocks are flushed off the model thread, on two cores


class TailThreads:
    def __init__(self, on_done: Callable[[], None], threads: int = TAIL_THREADS) -> None:
        self.on_done, self.threads = on_done, threads
        self._pool: ThreadPoolExecutor | None = None  # made when first needed
        self._lock = threading.Lock()

    def submit(self, answer: Answer, tail: Callable[[], np.ndarray] | None) -> Future | None:
        """Start ``tail()`` now, timed into ``answer.flush_ms``; None for no tail."""
        if tail is None:
            return None
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="voxloop-tails")

        def run() -> np.ndarray:
            t0 = time.perf_counter()
            codes = tail()
            answer.flush_ms = 1000 * (time.perf_counter() - t0)
            return codes

        future = self._pool.submit(run)
        future.add_done_callback(lambda _: self.on_done())
        return future

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
