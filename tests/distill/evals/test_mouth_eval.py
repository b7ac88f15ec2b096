"""``voxloop eval mouth``: the bundled student's mouth says held-out answers from their words,
judged through the real codec decoder by the real Whisper, beside the pack's takes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from tests.distill.student.fixtures import tiny_examples
from voxloop.distill.evals.mouth import evaluate_mouth, format_mouth
from voxloop.distill.student.model import load_student
from voxloop.distill.student.pack import PackedData, pack_examples
from voxloop.distill.student.vocab import Tokenizer
from voxloop.models import DEFAULT_STUDENT

WEEK = "There are seven days in a week."  # a fixed answer the bundled mouth says clearly
ADD = "Seven plus five is twelve."


def test_the_mouth_is_judged_per_answer_and_per_turn(tmp_path, whisper):
    _, vocab = load_student(DEFAULT_STUDENT)
    answers = [(WEEK, "days_in_week", "heldout_voice"), (WEEK, "days_in_week", "heldout_phrasing"),
               (ADD, "add", "heldout_voice"), (ADD, "add", "train")]
    examples = [dataclasses.replace(e, answer_text=text, intent=intent, split=split)
                for e, (text, intent, split) in zip(tiny_examples(4), answers, strict=True)]
    pack = tmp_path / "pack.npz"  # the answers' takes are random codes: not the answer
    PackedData(pack_examples(examples, Tokenizer(vocab), np.full(1, 3, np.int16)),
               vocab).save(pack)
    metrics = evaluate_mouth(DEFAULT_STUDENT, pack, tmp_path / "out", progress=False,
                             asr=whisper)
    fixed, composed, both = (metrics["kinds"][k] for k in ("fixed", "composed", "all"))
    assert (fixed["answers"], fixed["turns"]) == (1, 2)
    assert (composed["answers"], composed["turns"]) == (1, 1)
    assert fixed["said_correct_pct"] == 100.0 and fixed["take_correct_pct"] == 0.0
    assert both["turns"] == 3  # the train turn is not held out
    assert both["said_turn_correct_pct"] > 66.6  # the week's two turns at least
    rows = [json.loads(line) for line in (tmp_path / "out" / "answers.jsonl").open()]
    week = next(r for r in rows if r["text"] == WEEK)
    heard = week["said"]["transcript"].lower()
    assert week["said"]["correct"] and ("seven" in heard or "7" in heard), heard
    assert "| fixed | 1 | 2 |" in format_mouth(metrics)
