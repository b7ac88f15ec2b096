"""One row of a batch the student generates for: its phase, its turn's progress, its
place in the batch's KV cache (:class:`RowStream`). The stepper (:mod:`generate`) moves a
row forward; everyone else only through ``reset``, ``mark`` / ``rollback`` and ``stop``."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import torch

from voxloop.distill.student.model import KVCache


class Phase(enum.Enum):
    """What a row's next position is, and so which head reads it."""

    LISTEN = "listen"  # user frames go in; the CTC head hears them
    TEXT = "text"  # answer words (text head)
    AUDIO = "audio"  # delayed codec steps (audio heads)
    SPEAK = "speak"  # the mouth's frames go out, one per step or all at once (no model call)
    HELD = "held"  # the words are written; the mouth waits for ``say`` (a vote's winner)
    DONE = "done"  # nothing more to write this turn


HEADS = {Phase.LISTEN: "ctc", Phase.TEXT: "text", Phase.AUDIO: "audio"}


@dataclass
class TurnProgress:
    """How far one row's turn has got: what was heard, what was made so far."""

    pending: np.ndarray | None = None  # embedding ids [C] of the next input position
    phase: Phase = Phase.LISTEN
    text: list[int] = field(default_factory=list)
    steps: list[np.ndarray] = field(default_factory=list)  # delayed audio steps [K_out]
    eos_step: int | None = None
    frames_out: int = 0
    word: int = 0  # the answer word being spoken (index into text; a word-pointer student)
    word_start: int = 0  # the audio step at which it started
    word_stay: float = 1.0  # the model's probability that the word has not ended yet
    heard: list[int] = field(default_factory=list)  # CTC head's argmax per user frame
    said: np.ndarray | None = None  # the mouth's frames of the answer [K_out, F]
    hold: bool = False  # a student with a mouth stops at HELD after its words
    draft: list[int] = field(default_factory=list)  # words fed after ``pending`` this call
    heard_last: np.ndarray | None = None  # user codes [K, T] fed before ``<sep>`` (end_turn)
    codes: np.ndarray | None = None  # every user code of the turn so far [K, T]
    # the audio intents head's log-probabilities over the heard-intents head's labels (read
    # once, from ``codes``, when the first words are written; None: not yet, or no head)
    audio: np.ndarray | None = None
    sep_at: int | None = None  # the cache position of ``<sep>``: the user's turn is before it
    # log-probability of the words written and, once written, of the answer's end (the
    # model's own distribution, whatever chose them): how sure the student is of its words
    text_logprob: float = 0.0
    # the fixed answer's word ids the heard words point to (``HeardIntents``; empty: none),
    # read when the first words are written (None: not yet); the words wait for it
    hint: list[int] | None = None
    # the answer word ids of the slot values heard, as often as heard (``HeardIntents.slots``;
    # read with the hint): the words lean to them until written
    slots: dict[int, int] = field(default_factory=dict)
    # the answer word id of the unit heard with the question's number (``number_unit``):
    # of the units, the words lean to it first
    first_unit: int | None = None


class RowStream:
    """One session: row ``index`` of a batch's KV cache and its turn's progress.

    The stepper moves it forward; everyone else only through ``reset`` (a new
    turn), ``mark`` / ``rollback`` (a tentative answer and its undo) and ``stop``.
    """

    def __init__(self, cache: KVCache, index: int) -> None:
        self.cache, self.index = cache, index  # the whole batch's cache, never a view
        self.turn = TurnProgress()
        self._mark = (0, 0, 0)  # (cache length, frames heard, codes) to go back to

    @property
    def length(self) -> int:
        """Positions filled in this row (user frames, then the answer's positions)."""
        return int(self.cache.lengths[self.index])

    @property
    def phase(self) -> Phase:
        return self.turn.phase

    @property
    def heard(self) -> list[int]:
        """The CTC head's argmax per user frame heard so far."""
        return self.turn.heard

    @property
    def answering(self) -> bool:
        return self.writing or self.turn.phase is Phase.SPEAK

    @property
    def writing(self) -> bool:
        """Its next position goes through the model (answer words or audio steps)."""
        return self.turn.phase in (Phase.TEXT, Phase.AUDIO)

    def reset(self) -> None:
        """Forget the turn: an empty row that listens."""
        self.turn = TurnProgress()
        self._set_length(0)
        self._mark = (0, 0, 0)

    def mark(self) -> None:
        """Remember this point (what was heard so far) for ``rollback``."""
        codes = self.turn.codes
        self._mark = (self.length, len(self.turn.heard), 0 if codes is None else codes.shape[1])

    def rollback(self) -> None:
        """Back to the mark, listening, as if nothing after it had happened: the
        positions after it are overwritten by the next ones."""
        length, heard, frames = self._mark
        codes = self.turn.codes
        self.turn = TurnProgress(heard=self.turn.heard[:heard],
                                 codes=None if codes is None or not frames else codes[:, :frames])
        self._set_length(length)

    def stop(self) -> None:
        """Write nothing more this turn."""
        self.turn.phase = Phase.DONE

    @torch.inference_mode()
    def _set_length(self, length: int) -> None:
        # a cache stepped in inference mode holds inference tensors: writable only in it
        self.cache.lengths[self.index] = length
