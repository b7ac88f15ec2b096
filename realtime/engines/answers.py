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
from dataclasses import dataclass

import numpy as np

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

    def get(self, timeout_s: float) -> AnswerItem | None:
        try:
            return self.items.get(timeout=timeout_s)
        except queue.Empty:
            return None
