"""Rescoring a settled answer: the student's own text head scores the head's likeliest
fixed answers from the row's cache, exactly as a pass over the whole turn would, and the
stepper says the best where it beats the student's own by the margin."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import ANSWERS, answer_turn, tiny_student_with_mouth
from voxloop.distill.student.config import HeardIntentsConfig
from voxloop.distill.student.generate import SamplingOptions
from voxloop.distill.student.layout import text_token_ids, user_frame_ids
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.rescore import answer_logprobs, rescored_answer
from voxloop.distill.student.vocab import EOT, SEP, Tokenizer, answer_words

CODES = np.random.default_rng(3).integers(0, 1024, (8, 9))
SHORT = SamplingOptions(max_text_tokens=5)  # an untrained student's words end at the cap
OFF = dataclasses.replace(SHORT, heard_intents=False)


class Leaning:
    """A head that never overrides (nothing it is sure of) and reads ``ranked`` as the
    likeliest fixed answers, the student's own answer at ``own_prob``."""

    def __init__(self, ranked: list[tuple[str, float]], own_prob: float,
                 **config) -> None:
        self.ranked, self.own_prob = ranked, own_prob
        self.config = HeardIntentsConfig(**config)

    def fixed_answer(self, heard: str, min_prob: float | None = None,
                     audio=None) -> None:
        return None

    def answer_prob(self, heard: str, answer: str, audio=None) -> float:
        return self.own_prob

    def slots(self, heard: str, audio=None) -> Counter:
        return Counter()

    def likeliest_answers(self, heard: str, top: int, audio=None
                          ) -> list[tuple[str, float]]:
        return self.ranked[:top]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, vocab, _ = tiny_student_with_mouth(tmp_path_factory.mktemp("student"))
    return model, Tokenizer(vocab)


def _settled(model, tokenizer, options: SamplingOptions | None = None):
    """(the words handed out, the row at the end of its turn, the frames said)."""
    return answer_turn(model, tokenizer, [CODES[:, :4], CODES[:, 4:]], options or SHORT)


@torch.inference_mode()
def _forced(model, tokenizer, answer: str) -> float:
    """The answer's log-probability from one pass over the whole turn, no cache."""
    words = tokenizer.encode_answer(answer)
    ids = np.concatenate([user_frame_ids(model.config, CODES),
                          text_token_ids(model.config, np.array([SEP, *words]))])
    logits = model(torch.from_numpy(ids)[None], heads=("text",)).text[0].float()
    targets = [*words, EOT]
    return float(torch.log_softmax(logits, -1)[CODES.shape[1]:][
        torch.arange(len(targets)), targets].sum())


def test_answers_are_scored_from_the_cache_as_from_the_whole_turn(tiny):
    model, tokenizer = tiny
    _, row, _ = _settled(model, tokenizer, OFF)
    assert row.turn.sep_at == CODES.shape[1]  # the user's frames, then <sep>
    answers = [ANSWERS[0], ANSWERS[2], ANSWERS[1]]
    scores = answer_logprobs(model, row.cache, row.index, row.turn.sep_at,
                             [tokenizer.encode_answer(a) for a in answers])
    for answer, score in zip(answers, scores, strict=True):
        assert score == pytest.approx(_forced(model, tokenizer, answer), abs=1e-4)


def test_the_best_scored_answer_is_said_where_it_beats_the_students_by_the_margin(tiny):
    model, tokenizer = tiny
    own = generate(model, tokenizer, CODES, OFF)
    other = next(a for a in ANSWERS if answer_words(a) != answer_words(own.text))
    gap = _forced(model, tokenizer, other) - own.text_logprob  # < 0: greedy is likelier
    weight, own_prob = 1.5, 0.01
    prob = min(1.0, math.exp((-gap + 1.0) / weight) * own_prob)  # beats it by about 1 nat
    assert prob < 1.0
    try:
        model.heard_intents = Leaning([(other, prob)], own_prob, rescore_weight=weight,
                                      rescore_margin=0.5)
        words, row, frames = _settled(model, tokenizer)
        assert row.turn.text == tokenizer.encode_answer(other)
        assert words == [answer_words(other)]  # held back, then all at once
        np.testing.assert_array_equal(frames, model.mouth.say(torch.tensor([row.turn.text]))[0]
                                      .numpy())
        assert row.turn.text_logprob == pytest.approx(own.text_logprob)  # how sure it was
        for kept in ({"rescore_margin": 1.5}, {"rescore_top": 0}):
            model.heard_intents = Leaning([(other, prob)], own_prob, rescore_weight=weight,
                                          **kept)
            assert _settled(model, tokenizer)[1].turn.text == own.text_ids
        model.heard_intents = Leaning([(other, prob)], own_prob, rescore_weight=weight)
        assert _settled(model, tokenizer, OFF)[1].turn.text \
            == own.text_ids
    finally:
        model.heard_intents = None


def test_answers_the_head_term_alone_cannot_lift_are_never_scored(tiny, monkeypatch):
    model, tokenizer = tiny
    _, row, _ = _settled(model, tokenizer, OFF)
    calls = []
    monkeypatch.setattr("voxloop.distill.student.rescore.answer_logprobs",
                        lambda *args: calls.append(args) or [0.0])
    own = tokenizer.decode_answer(row.turn.text)
    other = next(a for a in ANSWERS if answer_words(a) != answer_words(own))
    below = math.exp((row.turn.text_logprob - 1.0) / 1.5)  # its head term < the bar - 1
    head = Leaning([(own, 0.9), (other, below), ("Zebras gallop sideways.", 0.9)], 0.9)
    assert rescored_answer(model, tokenizer, head, row) is None and not calls
    sure = Leaning([(other, 0.9)], 1e-6)
    assert rescored_answer(model, tokenizer, sure, row) == tokenizer.encode_answer(other)
    assert len(calls) == 1 and len(calls[0][-1]) == 1  # one call, one row
    row.turn.sep_at = row.cache.capacity - 2  # no room left for its words after the turn
    assert rescored_answer(model, tokenizer, sure, row) is None and len(calls) == 1
