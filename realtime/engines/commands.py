"""The commands a session sends the model thread (:mod:`realtime.engines.batcher`): the
only way sessions change model state, run in order by that one thread; and the
:class:`Slot`, a session's handle that sends them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from voxloop.realtime.engines.answers import Answer

if TYPE_CHECKING:
    from voxloop.realtime.engines.batcher import ContinuousBatcher


@dataclass(frozen=True)
class Open:
    slot: int


@dataclass(frozen=True)
class Close:
    slot: int


@dataclass(frozen=True)
class NewTurn:
    slot: int


@dataclass(frozen=True)
class Listen:
    slot: int
    codes: np.ndarray  # [K, T] user codes (a semantic student: [1, T] tokens)


@dataclass(frozen=True)
class StartAnswer:
    """Each slot answers the turn it heard; two or more: one turn heard by several ears,
    a vote (``ContinuousBatcher.answer``)."""

    slots: tuple[int, ...]
    answers: tuple[Answer, ...]
    # frames [K, T] heard tentatively (a semantic ear's partial block), flushed on the
    # batcher's tail threads from the moment the answer is asked for and heard by the
    # model thread in the row's first text call, once flushed; a rollback undoes them
    tails: tuple[Future | None, ...]


@dataclass(frozen=True)
class Rollback:
    slot: int
    answer: Answer


@dataclass(frozen=True)
class Stop:
    slot: int
    answer: Answer


Command = Open | Close | NewTurn | Listen | StartAnswer | Rollback | Stop


class Slot:
    """A session's handle on its row; every method only queues a command."""

    def __init__(self, batcher: ContinuousBatcher, index: int) -> None:
        self.batcher, self.index = batcher, index
        self.closed = False

    def listen(self, codes: np.ndarray) -> None:
        """Append user codes ``[K, T]`` (frames in order, any T)."""
        if codes.shape[1]:
            self.batcher.send(Listen(self.index, codes))

    def new_turn(self) -> None:
        """Forget everything: the next codes start a new user turn."""
        self.batcher.send(NewTurn(self.index))

    def answer(self, tail: Callable[[], np.ndarray] | None = None) -> Answer:
        """Start answering what was heard so far (codes queued before this call included,
        then the frames ``tail()`` gives, which a rollback takes back)."""
        return self.batcher.answer([self], [tail])[0]

    def rollback(self, answer: Answer) -> None:
        """Drop ``answer`` and keep listening from where it started."""
        self.batcher.send(Rollback(self.index, answer))

    def stop(self, answer: Answer) -> None:
        """Stop writing ``answer`` (a barge-in); a no-op once another answer started."""
        self.batcher.send(Stop(self.index, answer))

    def close(self) -> None:
        """Give the slot back (once: a closed handle never touches a reused slot)."""
        if not self.closed:
            self.closed = True
            self.batcher.send(Close(self.index))
