"""The commands a session sends the model thread (:mod:`realtime.engines.batcher`): the
only way sessions change model state, run in order by that one thread."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from voxloop.realtime.engines.answers import Answer


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
