"""A second look at a settled answer: the student's own text head scores, teacher-forced
after the user's turn, the fixed answers of the intents the heard-intents head reads
likeliest, and the one with the best

    score = the student's log-probability of its words and end
            + ``rescore_weight`` x log(the head's probability of its intent)

is said where it beats the student's own answer's score by ``rescore_margin``.

Greedy words commit to their first word: a question misheard into another trained one
("got a funny one for me" heard "got if for me") starts the wrong answer, while the whole
right answer, scored by the same text head, is often nearly as likely, and the head
(the heard words without their order) leans to it. A candidate whose head term alone
cannot beat the student's score is never scored, so most turns cost nothing; the others
one model call of a few rows that reads the user's positions already in the row's cache.

    better = rescored_answer(model, tokenizer, head, row)  # word ids, or None: keep own
"""

from __future__ import annotations

import math

import numpy as np
import torch

from voxloop.distill.student.layout import text_token_ids
from voxloop.distill.student.model import KVCache, Student
from voxloop.distill.student.rows import RowStream
from voxloop.distill.student.vocab import EOT, SEP, UNK, Tokenizer

PROB_FLOOR = 1e-9  # the head's probabilities are softmaxes: never 0, but may round to it


@torch.inference_mode()
def answer_logprobs(model: Student, cache: KVCache, index: int, sep_at: int,
                    answers: list[list[int]]) -> list[float]:
    """The log-probability of each answer (word ids: its words, then its end) after the
    ``sep_at`` positions row ``index`` of ``cache`` holds (the user's turn), in one call of
    ``len(answers)`` rows over a copy of those positions."""
    width = 1 + max(len(words) for words in answers)  # <sep>, then the words
    copy = KVCache.empty(model.config, len(answers), sep_at + width,
                         device=cache.lengths.device, dtype=cache.keys[0].dtype)
    for mine, theirs in zip(copy.keys + copy.values, cache.keys + cache.values, strict=True):
        mine[:, :sep_at] = theirs[index, :sep_at]
    copy.lengths[:] = sep_at
    ids = np.full((len(answers), width, model.config.channels), model.config.null_id, np.int64)
    for b, words in enumerate(answers):
        ids[b, :len(words) + 1] = text_token_ids(model.config, np.array([SEP, *words]))
    logits = model(torch.from_numpy(ids).to(cache.lengths.device), copy, heads=("text",)).text
    logprobs = torch.log_softmax(logits.float(), -1)
    return [float(logprobs[b, torch.arange(len(words) + 1), [*words, EOT]].sum())
            for b, words in enumerate(answers)]


def rescored_answer(model: Student, tokenizer: Tokenizer, head, row: RowStream
                    ) -> list[int] | None:
    """The word ids of a fixed answer to say instead of the row's settled words (their
    log-probability ``turn.text_logprob``), or None to keep them."""
    turn, config = row.turn, head.config
    if not config.rescore_top or turn.sep_at is None or not turn.text:
        return None
    heard = tokenizer.decode_ctc(turn.heard)
    own = tokenizer.decode_answer(turn.text)
    weight, bar = config.rescore_weight, turn.text_logprob + config.rescore_margin
    bar += weight * math.log(max(head.answer_prob(heard, own, turn.audio), PROB_FLOOR))
    candidates = []
    for answer, prob in head.likeliest_answers(heard, config.rescore_top, turn.audio):
        words = tokenizer.encode_answer(answer)
        term = weight * math.log(max(prob, PROB_FLOOR))
        fits = turn.sep_at + len(words) + 1 <= row.cache.capacity  # as the row's own would
        if term > bar and words != turn.text and UNK not in words and fits:  # logprob <= 0
            candidates.append((words, term))
    if not candidates:
        return None
    scores = answer_logprobs(model, row.cache, row.index, turn.sep_at,
                             [words for words, _ in candidates])
    best = max(range(len(candidates)), key=lambda i: scores[i] + candidates[i][1])
    return candidates[best][0] if scores[best] + candidates[best][1] > bar else None
