"""Continuous batching: one model thread serves every session's student row.

Each session owns a *slot*: one :class:`RowStream` of a shared generation state
(a row of one KV cache plus its turn's progress). Sessions talk to the model
thread only through commands (:class:`Listen`, :class:`StartAnswer`,
:class:`Rollback`, :class:`Stop`, ...) and read what it makes from an
:class:`Answer` queue (:mod:`realtime.engines.answers`), so all model state is
touched by one thread. Every loop iteration runs one model call over all slots
with work: rows still listening append their queued user codes (at most
``max_prefill_frames`` each), rows that answer take one step. Sessions join and
leave between calls.

    slot = batcher.open()
    slot.listen(codes)            # [K, T] user codes (or [1, T] tokens), while the user speaks
    answer = slot.answer(tail)    # the turn ended (maybe tentatively): start writing
                                  # (tail: None, or a callable giving the last frames)
    answers = batcher.answer(slots, tails)  # one turn heard by several ears: a vote
    answer.get(timeout_s)         # Word(text) | Frame(codes [K_out]) | Done(reason)
                                  # | Failed(error): the model call failed
    slot.rollback(answer)         # speech resumed: forget the answer, keep listening
    slot.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from voxloop.distill.student.generate import StudentStepper
from voxloop.distill.student.rows import Phase, RowStream
from voxloop.distill.student.votes import winner
from voxloop.errors import VoxloopError
from voxloop.realtime.engines.answers import Answer, Done, Failed, Frame, Reason, Word
from voxloop.realtime.engines.commands import (
    Close,
    Command,
    Listen,
    NewTurn,
    Open,
    Rollback,
    Slot,
    StartAnswer,
    Stop,
)
from voxloop.realtime.engines.tails import TailThreads

log = logging.getLogger("voxloop.realtime")
WORDS_UNWRITTEN = (Phase.LISTEN, Phase.TEXT)  # a row's words are complete after these


@dataclass
class _Row:
    """The model thread's view of one slot."""

    stream: RowStream
    queued: deque = field(default_factory=deque)  # user code chunks [K, T] not yet prefilled
    history: list[np.ndarray] = field(default_factory=list)  # this turn's user codes
    answer: Answer | None = None
    tail: Future | None = None  # the answer's tail, still flushing: the row waits for it
    lost: bool = False  # a failed model call reset it mid-turn: this turn cannot be answered

    @property
    def ready(self) -> bool:
        """Not waiting for its tail (a row that waits is skipped: other rows go on)."""
        return self.tail is None or self.tail.done()


@dataclass(frozen=True)
class BatcherStats:
    calls: int  # calls that ran the model
    rows_per_call: float  # mean rows in one model call
    busy_s: float  # time spent in model calls


class ContinuousBatcher:
    def __init__(self, stepper: StudentStepper, slots: int, max_prefill_frames: int = 25) -> None:
        self.stepper, self.slots = stepper, slots
        self.max_prefill_frames = max_prefill_frames
        options, config = stepper.options, stepper.config
        # user frames kept per turn: what leaves room for the longest answer
        self.max_user_frames = config.max_len - options.max_text_tokens - \
            options.max_audio_frames - config.k_out - 2
        if self.max_user_frames < 25:
            raise VoxloopError(f"the student's {config.max_len} positions leave no room for a "
                               "user turn; lower max_audio_frames")
        self._state = stepper.start(slots)  # the model thread's, as is everything in _rows
        self._rows: list[_Row | None] = [None] * slots
        self._free = set(range(slots))  # the sessions' view, under the lock
        self._commands: deque[Command] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._calls, self._rows_called, self._busy_s = 0, 0, 0.0
        self._votes: list[list[tuple[_Row, Answer]]] = []  # votes not yet settled
        self._tails = TailThreads(on_done=self._notify)  # tails flushed off this thread

    # -- session side -------------------------------------------------------------------
    def open(self) -> Slot:
        """A free slot; raises when every slot is taken."""
        with self._wake:
            self._start()
            if self._free:  # commands run in order: a slot closed just now can be reused
                index = min(self._free)
                self._free.discard(index)
                self._commands.append(Open(index))
                self._wake.notify()
                return Slot(self, index)
        raise VoxloopError(f"all {self.slots} model slots are in use; try again later")

    def answer(self, slots: list[Slot], tails: list[Callable[[], np.ndarray] | None]
               ) -> list[Answer]:
        """Each slot starts answering, as ``Slot.answer``. Two or more are a vote on one
        turn: each row writes its words, then the model thread says the wording most of
        them wrote (``votes.winner``) and ends the others (``Done(STOPPED)``) before
        their mouths run, so a vote costs the extra rows' words only."""
        answers = [Answer() for _ in slots]
        self.send(StartAnswer(tuple(slot.index for slot in slots), tuple(answers),
                               tuple(self._tails.submit(a, t) for a, t in zip(answers, tails,
                                                                     strict=True))))
        return answers

    def stats(self) -> BatcherStats:
        return BatcherStats(self._calls, self._rows_called / max(1, self._calls), self._busy_s)

    def shutdown(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread:
            self._thread.join(timeout=5)
        self._tails.shutdown()

    def send(self, command: Command) -> None:
        with self._wake:
            if isinstance(command, Close):
                self._free.add(command.slot)
            self._commands.append(command)
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
                for command in commands:
                    self._run(command)
                if self._has_work():
                    self._call()
                if self._votes:
                    self._settle_votes()
            except Exception as exc:  # noqa: BLE001 - one bad call must not end the thread
                log.exception("event=batcher_error")
                self._fail_all(exc)

    def _run(self, command: Command) -> None:
        if isinstance(command, StartAnswer):
            self._start_answer(command)
            return
        if not isinstance(command, Open) and self._rows[command.slot] is None:
            return  # a late command for a closed slot: nothing of it is left to change
        match command:
            case Open(slot) | NewTurn(slot):
                self._new_turn(slot)
            case Close(slot):
                self._finish(self._rows[slot], Reason.CLOSED)
                self._rows[slot] = None
            case Listen(slot, codes):
                self._rows[slot].queued.append(codes)
            case Rollback(slot, answer):
                self._rollback(self._rows[slot], answer)
            case Stop(slot, answer):
                if self._rows[slot].answer is answer:
                    self._stop(self._rows[slot])

    def _fail_all(self, exc: Exception) -> None:
        """Every open answer ends with the error; rows start over (their caches may be
        half written), and a turn being heard is lost: its answer will fail too, rather
        than answer the rest of it as if it were the whole."""
        self._votes.clear()
        for row in self._rows:
            if row is not None:
                row.lost = row.lost or bool(row.history or row.queued)  # (a tentative
                if row.answer is not None:  # answer's turn too: the user may go on)
                    row.answer.items.put(Failed(f"{type(exc).__name__}: {exc}"))
                    row.answer = None
                row.tail = None
                row.queued.clear()
                row.history.clear()
                row.stream.reset()

    def _has_work(self) -> bool:
        return any(r is not None and ((r.stream.answering and r.ready)
                                      or (r.stream.phase is Phase.LISTEN and r.queued))
                   for r in self._rows)

    def _call(self) -> None:
        """One model call over every row with work."""
        active, chunks = [], []
        for index, row in enumerate(self._rows):
            if row is None:
                continue
            if row.stream.answering and row.ready:
                if row.tail is not None:
                    self._hear_tail(row)
                    if not row.stream.answering:
                        continue
                active.append(index)
                chunks.append(None)
            elif row.stream.phase is Phase.LISTEN and row.queued:
                active.append(index)
                chunks.append(self._take_codes(row))
        if not active:  # each row with work was a tail that came to nothing (or failed)
            return
        # a row the student's mouth speaks for hands out a frame it already has: no model
        modelled = sum(self._rows[i].stream.phase is not Phase.SPEAK for i in active)
        hears_last = [self._rows[i].stream.turn.heard_last is not None for i in active]
        t0 = time.perf_counter()
        out = self.stepper.advance(self._state.select(active), chunks)
        self._busy_s += time.perf_counter() - t0
        self._calls += bool(modelled)
        self._rows_called += modelled
        for b, index in enumerate(active):
            row = self._rows[index]
            if row.answer is None:
                continue
            if hears_last[b]:  # the turn's last frames were heard in this call
                row.answer.heard = list(row.stream.heard)
            for word in out.text[b]:
                row.answer.items.put(Word(word))
            if row.answer.words_logprob is None and row.stream.phase not in WORDS_UNWRITTEN:
                row.answer.words_logprob = row.stream.turn.text_logprob
            if out.frames[b] is not None:
                row.answer.items.put(Frame(out.frames[b]))
            self._hand_out_said(row)

    def _hand_out_said(self, row: _Row) -> None:
        """A row whose mouth has said its answer hands out every frame now, with its last
        word, rather than one per loop: the first audio does not wait for the next model
        call (another session's prefill, under load). The row is then done."""
        for frame in self.stepper.said_frames(row.stream).T:
            row.answer.items.put(Frame(frame))
        if row.stream.phase is Phase.DONE:
            self._finish(row, Reason.COMPLETED)

    def _take_codes(self, row: _Row) -> np.ndarray:
        """Up to ``max_prefill_frames`` queued frames; a turn longer than the cache
        allows starts over from its last half (the question is usually at the end)."""
        codes = row.queued.popleft()
        if codes.shape[1] > self.max_prefill_frames:
            row.queued.appendleft(codes[:, self.max_prefill_frames:])
            codes = codes[:, :self.max_prefill_frames]
        row.history.append(codes)
        if row.stream.length + codes.shape[1] > self.max_user_frames:
            return self._start_over(row)
        return codes

    def _start_over(self, row: _Row) -> np.ndarray:
        """An empty row, and the last half of the turn's codes for it to hear again."""
        recent = np.concatenate(row.history, axis=1)[:, -(self.max_user_frames // 2):]
        row.history = [recent]
        row.stream.reset()
        return recent

    def _make_room(self, row: _Row, codes: np.ndarray) -> np.ndarray:
        """Room in the row for ``codes [K, T]`` (as ``_take_codes`` makes it: the turn starts
        over from its last half); the codes that fit."""
        if row.stream.length + codes.shape[1] > self.max_user_frames and row.history:
            self.stepper.advance(self._state.select([row.stream.index]),
                                 [self._start_over(row)])
        return codes[:, :max(0, self.max_user_frames - row.stream.length)]

    def _stop(self, row: _Row) -> None:
        """The row writes nothing more; its answer ends as stopped."""
        row.stream.stop()
        self._finish(row, Reason.STOPPED)

    def _finish(self, row: _Row | None, reason: Reason) -> None:
        if row is not None:
            row.tail = None  # a tail still flushing is not heard
        if row is not None and row.answer is not None:
            row.answer.items.put(Done(reason))
            row.answer = None

    def _new_turn(self, index: int) -> None:
        self._finish(self._rows[index], Reason.STOPPED)
        self._rows[index] = _Row(self._state.rows[index])
        self._rows[index].stream.reset()

    def _start_answer(self, command: StartAnswer) -> None:
        """The rows' queued codes in one model call; the rows start writing, their tails
        heard in the first text call (a vote's rows stop at HELD, for ``_settle_votes``)."""
        starts = [(self._rows[i], answer, tail) for i, answer, tail
                  in zip(command.slots, command.answers, command.tails, strict=True)
                  if self._rows[i] is not None]  # (a late command for a closed slot: none)
        for row, answer, _ in starts:
            if row.lost:
                answer.items.put(Failed("the model failed while this turn was heard: "
                                        "say it again"))
        starts = [start for start in starts if not start[0].lost]
        rows = [row for row, _, _ in starts]
        for row in rows:
            self._finish(row, Reason.STOPPED)
        if not rows:
            return
        together = self._state.select([row.stream.index for row in rows])
        while any(row.queued for row in rows):  # what was heard before the end of the turn
            self.stepper.advance(together, [self._take_codes(row) if row.queued else None
                                            for row in rows])
        writing = []
        for b, (row, answer, tail) in enumerate(starts):
            row.stream.mark()  # a rollback comes back here
            answer.heard = list(row.stream.heard)  # (and the tail's, after the first call)
            row.answer, row.tail = answer, tail
            if row.stream.length == 0 and tail is None:  # nothing heard: nothing to answer
                self._finish(row, Reason.EMPTY)
            else:
                writing.append(b)
                row.stream.turn.hold = len(starts) > 1
        # a tail (tentative frames: after the mark, kept out of the history) is heard in the
        # row's first text call, with <sep>, once flushed: the model thread never waits for
        # it, other rows go on meanwhile (_hear_tail)
        self.stepper.end_turn(together, writing)
        if len(starts) > 1:
            self._votes.append([(row, answer) for row, answer, _ in starts])

    def _hear_tail(self, row: _Row) -> None:
        """A flushed tail's frames go in with the row's first text call (after the room
        for them is made: a turn longer than the cache starts over, and listens again to
        its last half, before writing)."""
        try:
            codes, row.tail = row.tail.result(), None
        except Exception as exc:  # noqa: BLE001 - this row's flush alone failed
            log.exception("event=tail_flush_error")
            row.answer.items.put(Failed(f"{type(exc).__name__}: {exc}"))
            row.answer = row.tail = None
            row.stream.stop()
            return
        if codes is None or not codes.shape[1]:
            if row.stream.length == 0:  # nothing heard after all
                row.stream.stop()
                self._finish(row, Reason.EMPTY)
            return
        hold = row.stream.turn.hold
        row.stream.rollback()  # to the mark, listening (the row has waited: nothing written)
        codes = self._make_room(row, codes)
        row.stream.mark()
        self.stepper.end_turn(self._state.select([row.stream.index]), [0], [codes])
        row.stream.turn.hold = hold

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify()

    def _settle_votes(self) -> None:
        """Every vote whose rows have all written their words (or ended): the winner's
        mouth says them, the other rows end."""
        for vote in list(self._votes):
            live = [(row, answer) for row, answer in vote if row.answer is answer]
            if any(row.stream.writing for row, _ in live):
                continue
            self._votes.remove(vote)
            held = [row.stream.phase is Phase.HELD for row, _ in live]
            if not any(held):
                continue
            wordings = [" ".join(map(str, row.stream.turn.text)) for row, _ in live]
            best = winner(wordings, held)
            for b, (row, _) in enumerate(live):
                if b == best:
                    self.stepper.say(row.stream)
                    self._hand_out_said(row)
                elif held[b]:
                    self._stop(row)

    def _rollback(self, row: _Row, answer: Answer) -> None:
        if row.answer is not answer and row.stream.phase is Phase.LISTEN:
            return  # a newer turn or answer already replaced it
        self._finish(row, Reason.ROLLED_BACK)
        row.stream.rollback()
