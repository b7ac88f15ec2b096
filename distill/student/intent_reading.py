"""The stepper's reading of which answer the user asked for: what the heard-intents head
(:mod:`heard_intents`, the words the student heard) and, where the student has one, the
audio intents head (:mod:`audio_intents`, the sound of the whole turn) make of a turn, and
what the stepper does with it.

- ``guess``: the first call's draft, the likeliest fixed answer however unsure;
- ``hint``: read once, when the first words are written: the fixed answer the heads are
  sure of (the words wait for it), and the slot values heard (the words lean to them:
  ``lean``);
- ``settle``: the words are written: the hint replaces them where the heads all but rule
  them out, else the heads' likeliest may be scored (:mod:`rescore`).

A student without a mouth says only the words it writes, so nothing is read for it.
"""

from __future__ import annotations

import numpy as np
import torch

from voxloop.distill.student.heard_intents import number_unit, slot_words, unit_words
from voxloop.distill.student.rescore import rescored_answer
from voxloop.distill.student.rows import Phase, RowStream, TurnProgress
from voxloop.distill.student.vocab import UNK, Tokenizer


class IntentReading:
    """The heads of ``model`` (``heard_intents``, ``audio_intents``) as the stepper reads
    them; ``enabled`` False (``SamplingOptions.heard_intents``): none."""

    def __init__(self, model, tokenizer: Tokenizer, enabled: bool = True) -> None:
        self.model, self.tokenizer = model, tokenizer
        # only a mouth can say other words than the ones the model wrote
        self.intents = getattr(model, "heard_intents", None) \
            if enabled and model.mouth is not None else None
        self.audio_intents = getattr(model, "audio_intents", None) \
            if self.intents is not None and self.intents.config.audio_weight else None
        self.slot_ids = {tokenizer.text_ids[w] for said in slot_words().values() for w in said
                         if w in tokenizer.text_ids}
        self.unit_ids = {tokenizer.text_ids[w] for w in unit_words() if w in tokenizer.text_ids}

    def holds_words(self, turn: TurnProgress) -> bool:
        """Whether the words are held back until settled (they may still change)."""
        return bool(turn.hint) or self.intents is not None and self.intents.config.rescore_top > 0

    def audio(self, turn: TurnProgress) -> np.ndarray | None:
        """The audio intents head's reading of the turn's codes (``turn.audio``, read once
        the turn has ended); None without a head (or one weighed at 0)."""
        head = self.audio_intents
        if turn.audio is None and head is not None and turn.codes is not None \
                and turn.phase is not Phase.LISTEN:
            turn.audio = self.intents.audio_logprobs(head.config.labels,
                                                     head.log_probs(turn.codes))
        return turn.audio

    def guess(self, turn: TurnProgress) -> str | None:
        """The likeliest fixed answer, however unsure (a draft is only checked)."""
        if self.intents is None:
            return None
        return self.intents.fixed_answer(self.tokenizer.decode_ctc(turn.heard), 0.0,
                                         self.audio(turn))

    def hint(self, turn: TurnProgress) -> list[int]:
        """The word ids of the fixed answer the heads point to, or none; sets the turn's
        slot values heard (``turn.slots``, ``turn.first_unit``)."""
        if self.intents is None:
            return []
        heard, audio = self.tokenizer.decode_ctc(turn.heard), self.audio(turn)
        if self.intents.config.slot_bonus:
            turn.slots = {self.tokenizer.text_ids[w]: n
                          for w, n in self.intents.slots(heard, audio).items()
                          if w in self.tokenizer.text_ids}
            turn.first_unit = self.tokenizer.text_ids.get(number_unit(heard))
        answer = self.intents.fixed_answer(heard, audio=audio)
        words = [] if answer is None else self.tokenizer.encode_answer(answer)
        return [] if UNK in words else words  # an answer it cannot write, it cannot say

    def settle(self, turn: TurnProgress, row: RowStream | None) -> None:
        """The words are written: where the heads point to another fixed answer and away
        from the student's, and the student is no surer than the head's ``max_logprob``,
        it says that one (its log-probability stays the student's own: how sure the
        student was); else the heads' likeliest may be scored (:mod:`rescore`)."""
        if self.intents is None:
            return
        config = self.intents.config
        if turn.hint and turn.text != turn.hint and turn.text_logprob <= config.max_logprob:
            heard = self.tokenizer.decode_ctc(turn.heard)
            own = self.tokenizer.decode_answer(turn.text)
            if self.intents.answer_prob(heard, own, turn.audio) <= config.max_own_prob:
                turn.text = list(turn.hint)
                return
        if row is not None:
            turn.text = rescored_answer(self.model, self.tokenizer, self.intents, row) or turn.text

    def lean(self, turn: TurnProgress, logits: torch.Tensor) -> torch.Tensor:
        """``logits [V]``, where the student would write a slot value (a number, a name:
        ``slot_words``), with those heard and not yet written as often (the turn's
        ``slots``) raised by the head's ``slot_bonus``: the words say what was heard, where
        the student's own words go on a slot value and not elsewhere. Of the units, the one
        heard with the number (``number_unit``) is owed first."""
        owed = [i for i, n in turn.slots.items() if turn.text.count(i) < n]
        if turn.first_unit in owed:  # the number's own unit before the one asked for
            owed = [i for i in owed if i == turn.first_unit or i not in self.unit_ids]
        if not owed or int(logits.argmax()) not in self.slot_ids:
            return logits
        leaned = logits.clone()
        leaned[owed] += self.intents.config.slot_bonus
        return leaned
