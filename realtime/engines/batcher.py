"""Continuous batching: one model thread serves every session's student row.

Each session owns a *slot*: a row of one shared KV cache plus its generation
state. Sessions talk to the model thread only through commands (``listen``,
``answer``, ``rollback``, ``stop``) and read what it makes from an
:class:`Answer` queue, so all model state is touched by one thread. Every loop
iteration runs one model call over all slots with work: rows still listening
append their queued user codes (at most ``max_prefill_frames`` each), rows that
answer take one step. Sessions join and leave between calls.

    slot = batcher.open()
    slot.listen(codes)            # [K, T] user codes, while the user speaks
    answer = slot.answer()        # the turn ended (maybe tentatively): start writing
    answer.get(timeout)           # ("word", str) | ("frame", [K_out]) | ("done", reason)
                                  # | ("error", message): the model call failed
    slot.rollback(answer)         # speech resumed: forget the answer, keep listening
    slot.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from voxloop.distill.student.generate import GenerationState, Generator, RowState
from voxloop.distill.student.model import KVCache
from voxloop.errors import VoxloopError

log = logging.getLogger("voxloop.realtime")


class Answer:
    """What one answer's row writes, in order: words, frames, then ``("done", reason)``
    (or ``("error", message)``)."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue = queue.SimpleQueue()
        self.heard: list[int] = []  # CTC ids of the user frames the answer started from
        self.started_s = time.perf_counter()

    def get(self, timeout_s: float) -> tuple[str, object] | None:
        try:
            return self.items.get(timeout=timeout_s)
        except queue.Empty:
            return None


@dataclass
class _Row:
    """The model thread's view of one slot."""

    state: RowState = field(default_factory=RowState)
    queued: deque = field(default_factory=deque)  # user code chunks [K, T] not yet prefilled
    history: list[np.ndarray] = field(default_factory=list)  # this turn's user codes
    answer: Answer | None = None
    mark: int = 0  # cache length when the answer started (rollback point)


@dataclass(frozen=True)
class BatcherStats:
    calls: int
    rows_per_call: float  # mean rows in one model call
    busy_s: float  # time spent in model calls


class Slot:
    """A session's handle on its row; every method only queues a command."""

    def __init__(self, batcher: ContinuousBatcher, index: int) -> None:
        self.batcher, self.index = batcher, index
        self.closed = False

    def listen(self, codes: np.ndarray) -> None:
        """Append user codes ``[K, T]`` (frames in order, any T)."""
        if codes.shape[1]:
            self.batcher._command(self.index, "listen", codes)

    def new_turn(self) -> None:
        """Forget everything: the next codes start a new user turn."""
        self.batcher._command(self.index, "new_turn", None)

    def answer(self) -> Answer:
        """Start answering what was heard so far (codes queued before this call included)."""
        answer = Answer()
        self.batcher._command(self.index, "answer", answer)
        return answer

    def rollback(self, answer: Answer) -> None:
        """Drop ``answer`` and keep listening from where it started."""
        self.batcher._command(self.index, "rollback", answer)

    def stop(self, answer: Answer) -> None:
        """Stop writing ``answer`` (a barge-in); a no-op once another answer started."""
        self.batcher._command(self.index, "stop", answer)

    def close(self) -> None:
        """Give the slot back (once: a closed handle never touches a reused slot)."""
        if not self.closed:
            self.closed = True
            self.batcher._command(self.index, "close", None)


class ContinuousBatcher:
    def __init__(self, generator: Generator, slots: int, max_prefill_frames: int = 25) -> None:
        self.generator, self.slots = generator, slots
        self.max_prefill_frames = max_prefill_frames
        options, config = generator.options, generator.config
        # user frames kept per turn: what leaves room for the longest answer
        self.max_user_frames = config.max_len - options.max_text_tokens - \
            options.max_audio_frames - config.k_out - 2
        if self.max_user_frames < 25:
            raise VoxloopError(f"the student's {config.max_len} positions leave no room for a "
                               "user turn; lower max_audio_frames")
        self._cache = KVCache.empty(config, slots, device=generator.device)
        self._rows: list[_Row | None] = [None] * slots  # the model thread's
        self._free = set(range(slots))  # the sessions' view, under the lock
        self._commands: deque = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._torch_generator = torch.Generator().manual_seed(generator.options.seed)
        self._calls, self._rows_called, self._busy_s = 0, 0, 0.0

    # -- session side -------------------------------------------------------------------
    def open(self) -> Slot:
        """A free slot; raises when every slot is taken."""
        with self._wake:
            self._start()
            if self._free:  # commands run in order: a slot closed just now can be reused
                index = min(self._free)
                self._free.discard(index)
                self._commands.append(("open", index, None))
                self._wake.notify()
                return Slot(self, index)
        raise VoxloopError(f"all {self.slots} model slots are in use; try again later")

    def stats(self) -> BatcherStats:
        return BatcherStats(self._calls, self._rows_called / max(1, self._calls), self._busy_s)

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread:
            self._thread.join(timeout=5)

    def _command(self, index: int, kind: str, value) -> None:
        with self._wake:
            if kind == "close":
                self._free.add(index)
            self._commands.append((kind, index, value))
            self._wake.notify()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="voxloop-batcher",
                                            daemon=True)
            self._thread.start()

    # -- model thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._commands and not self._has_work() and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                commands = list(self._commands)
                self._commands.clear()
            try:
                for kind, index, value in commands:
                    getattr(self, "_do_" + kind)(index, value)
                if self._has_work():
                    self._call()
            except Exception as exc:  # noqa: BLE001 - one bad call must not end the thread
                log.exception("event=batcher_error")
                self._fail_all(exc)

    def _fail_all(self, exc: Exception) -> None:
        """Every open answer ends with the error; rows start over (their caches may be
        half written)."""
        for index, row in enumerate(self._rows):
            if row is not None:
                if row.answer is not None:
                    row.answer.items.put(("error", f"{type(exc).__name__}: {exc}"))
                    row.answer = None
                self._rows[index] = _Row()
                self._cache.lengths[index] = 0

    def _has_work(self) -> bool:
        return any(r is not None and (r.state.phase in ("text", "audio")
                                      or (r.state.phase == "prefill" and r.queued))
                   for r in self._rows)

    def _call(self) -> None:
        """One model call over every row with work."""
        active, chunks = [], []
        for index, row in enumerate(self._rows):
            if row is None:
                continue
            if row.state.phase in ("text", "audio"):
                active.append(index)
                chunks.append(None)
            elif row.state.phase == "prefill" and row.queued:
                active.append(index)
                chunks.append(self._take_codes(index, row))
        t0 = time.perf_counter()
        state = GenerationState(self._cache.rows(active), [self._rows[i].state for i in active],
                                self._torch_generator)
        out = self.generator.advance(state, chunks)
        self._busy_s += time.perf_counter() - t0
        self._calls += 1
        self._rows_called += len(active)
        for b, index in enumerate(active):
            row = self._rows[index]
            if row.answer is None:
                continue
            if out.text[b] is not None:
                row.answer.items.put(("word", out.text[b]))
            if out.frames[b] is not None:
                row.answer.items.put(("frame", out.frames[b]))
            if row.state.phase == "done":
                self._finish(row, "completed")

    def _take_codes(self, index: int, row: _Row) -> np.ndarray:
        """Up to ``max_prefill_frames`` queued frames; a turn longer than the cache
        allows starts over from its last half (the question is usually at the end)."""
        codes = row.queued.popleft()
        if codes.shape[1] > self.max_prefill_frames:
            row.queued.appendleft(codes[:, self.max_prefill_frames:])
            codes = codes[:, :self.max_prefill_frames]
        row.history.append(codes)
        if int(self._cache.lengths[index]) + codes.shape[1] > self.max_user_frames:
            recent = np.concatenate(row.history, axis=1)[:, -(self.max_user_frames // 2):]
            row.history = [recent]
            row.state = RowState()
            self._cache.lengths[index] = 0
            return recent
        return codes

    def _finish(self, row: _Row, reason: str) -> None:
        if row.answer is not None:
            row.answer.items.put(("done", reason))
            row.answer = None

    def _do_open(self, index: int, _) -> None:
        self._rows[index] = _Row()
        self._cache.lengths[index] = 0

    def _do_close(self, index: int, _) -> None:
        row = self._rows[index]
        if row is not None:
            self._finish(row, "closed")
        self._rows[index] = None

    def _do_new_turn(self, index: int, _) -> None:
        row = self._rows[index]
        self._finish(row, "stopped")
        self._rows[index] = _Row()
        self._cache.lengths[index] = 0

    def _do_listen(self, index: int, codes: np.ndarray) -> None:
        self._rows[index].queued.append(codes)

    def _do_answer(self, index: int, answer: Answer) -> None:
        row = self._rows[index]
        self._finish(row, "stopped")
        while row.queued:  # what was heard before the end of the turn
            codes = self._take_codes(index, row)
            state = GenerationState(self._cache.rows([index]), [row.state],
                                    self._torch_generator)
            self.generator.advance(state, [codes])
        row.mark = int(self._cache.lengths[index])
        answer.heard = list(row.state.heard)
        row.answer = answer
        if row.mark == 0:  # nothing heard: nothing to answer
            self._finish(row, "empty")
            return
        state = GenerationState(self._cache.rows([index]), [row.state], self._torch_generator)
        self.generator.end_turn(state)

    def _do_rollback(self, index: int, answer: Answer) -> None:
        row = self._rows[index]
        if row.answer is not answer and row.state.phase == "prefill":
            return
        self._finish(row, "rolled_back")
        heard = row.state.heard
        row.state = RowState(heard=heard)
        self._cache.lengths[index] = row.mark

    def _do_stop(self, index: int, answer: Answer) -> None:
        row = self._rows[index]
        if row is not None and row.answer is answer:
            row.state.phase = "done"
            self._finish(row, "stopped")
