"""What the model thread hands a session back for one answer: typed items on a queue.

    match answer.get(timeout_s):
        case Word(text): ...            # the next answer word
        case Frame(codes): ...          # the next codec frame [K_out]
        case Done(reason): ...          # the end (a :class:`Reason`)
        case Failed(error): ...         # the model call failed
        case None: ...                  # nothing yet
    ended(item)                         # Done: True; Failed: raises

No torch here: the engine reads answers without importing the model.
"""

from __future__ import annotations

import enum
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxloop.distill.student.votes import winner
from voxloop.errors import VoxloopError


@dataclass(frozen=True)
class Word:
    text: str


@dataclass(frozen=True)
class Frame:
    codes: np.ndarray  # [K_out] codec codes of one answer frame


class Reason(enum.StrEnum):
    """Why an answer ended."""

    COMPLETED = "completed"  # the model said all it had to say
    STOPPED = "stopped"  # stop(), a new turn or a newer answer ended it
    ROLLED_BACK = "rolled_back"
    CLOSED = "closed"
    EMPTY = "empty"  # nothing was heard: nothing to answer


@dataclass(frozen=True)
class Done:
    reason: Reason


@dataclass(frozen=True)
class Failed:
    error: str  # "ExceptionType: message" of the failed model call


AnswerItem = Word | Frame | Done | Failed


def ended(item: AnswerItem | None) -> bool:
    """True when ``item`` ends the answer; raises when it ended because the model failed."""
    match item:
        case Done():
            return True
        case Failed(error):
            raise VoxloopError(f"the student failed: {error}")
    return False


class Answer:
    """What one answer's row writes, in order: words, frames, then :class:`Done`
    (or :class:`Failed`)."""

    def __init__(self) -> None:
        self.items: queue.SimpleQueue[AnswerItem] = queue.SimpleQueue()
        self.heard: list[int] = []  # CTC ids of the user frames the answer started from
        self.started_s = time.perf_counter()
        self.flush_ms: float | None = None  # the ear's end-of-turn flush, where it had one
        # log-probability of the answer's words and end under the student's text head, set
        # before its first frame: how sure it is of them (the hybrid hands unsure turns over)
        self.words_logprob: float | None = None

    def get(self, timeout_s: float) -> AnswerItem | None:
        try:
            return self.items.get(timeout=timeout_s)
        except queue.Empty:
            return None


class VotedAnswer:
    """The answers of one turn heard on several alignments of the ear's frames (the same
    audio, started a few ms apart): each writes its words in parallel; the wording most
    of them wrote wins (a tie: the earliest ear's), the others are stopped, and only the
    winner's items are read: its words, then its frames. Reads like an :class:`Answer`.
    (The batcher settles its votes by the same rule before any mouth runs, so there the
    winner is the one answer that goes on to frames.)"""

    def __init__(self, answers: list[Answer], stop: Callable[[int], None]) -> None:
        self.answers, self._stop = answers, stop
        self.started_s = answers[0].started_s
        self._flush_ms: float | None = None
        self.winner: int | None = None
        self.wordings: list[str] = []
        self._words: list[list[str]] = [[] for _ in answers]
        self._after_words: list[AnswerItem | None] = [None] * len(answers)
        self._pending: deque[AnswerItem] = deque()

    @property
    def heard(self) -> list[int]:
        return self.answers[self.winner or 0].heard

    @property
    def words_logprob(self) -> float | None:
        return None if self.winner is None else self.answers[self.winner].words_logprob

    @property
    def flush_ms(self) -> float | None:
        """The ears' end-of-turn flush: the session's, where it flushed them all, else the
        slowest of the rows' own (a tentative answer's tails, flushed by the model thread)."""
        if self._flush_ms is not None:
            return self._flush_ms
        return max((a.flush_ms for a in self.answers if a.flush_ms is not None), default=None)

    @flush_ms.setter
    def flush_ms(self, value: float | None) -> None:
        self._flush_ms = value

    def get(self, timeout_s: float) -> AnswerItem | None:
        if self.winner is None and not self._vote(timeout_s):
            return None
        if self._pending:
            return self._pending.popleft()
        return self.answers[self.winner].get(timeout_s)

    def _vote(self, timeout_s: float) -> bool:
        """Read every answer's words until each wrote something else (its first frame, or
        its end); then choose. False: not all are there within ``timeout_s`` (what was
        read is kept for the next call). Every answer must get that far before the choice,
        so reading them one after another waits no longer than polling them all."""
        deadline = time.perf_counter() + timeout_s
        for i, answer in enumerate(self.answers):
            while self._after_words[i] is None:
                item = answer.get(max(0.0, deadline - time.perf_counter()))
                if item is None:
                    return False
                if isinstance(item, Word):
                    self._words[i].append(item.text)
                else:
                    self._after_words[i] = item
        self.wordings = [" ".join(words) for words in self._words]
        self.winner = winner(self.wordings, [isinstance(item, Frame) for item in self._after_words])
        for i in range(len(self.answers)):
            if i != self.winner:
                self._stop(i)
        self._pending.extend([*map(Word, self._words[self.winner]),
                              self._after_words[self.winner]])
        return True
