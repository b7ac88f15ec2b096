"""``voxloop eval mouth``: the bundled student's mouth says held-out answers from their words,
judged through the real codec decoder by the real Whisper, beside the pack's takes; and
``voxloop distill choose-mouth`` keeps the mouth understood most."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_examples
from voxloop.cli import main
from voxloop.distill.evals.mouth import choose_mouth, evaluate_mouth, format_choice, format_mouth
from voxloop.distill.student.model import load_student
from voxloop.distill.student.pack import PackedData, pack_examples
from voxloop.distill.student.vocab import Tokenizer
from voxloop.errors import VoxloopError
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


def test_the_mouth_understood_most_is_chosen_over_a_lower_loss(tmp_path, whisper):
    model, vocab = load_student(DEFAULT_STUDENT)
    examples = [dataclasses.replace(e, answer_text=text, intent=intent, split="valid")
                for e, (text, intent) in zip(tiny_examples(3), [(WEEK, "days_in_week")] * 2
                                             + [(ADD, "add")], strict=True)]
    pack = tmp_path / "pack.npz"
    PackedData(pack_examples(examples, Tokenizer(vocab), np.full(1, 3, np.int16)),
               vocab).save(pack)
    run, config = tmp_path / "run", dataclasses.asdict(model.mouth.config)
    (run / "snapshots").mkdir(parents=True)
    own = model.mouth.state_dict()
    mute = {k: v.clone() for k, v in own.items()}
    for k in mute:
        if k.startswith("heads."):
            mute[k].zero_()  # every frame says code 0
    torch.save({"model": own, "config": config, "step": 100}, run / "snapshots" /
               "step-000100.pt")
    torch.save({"model": mute, "config": config, "step": 200, "valid": {"total": 1.0}},
               run / "best.pt")  # the lowest valid loss, and says nothing
    report = choose_mouth(run, DEFAULT_STUDENT, pack, progress=False, asr=whisper)
    assert report["chosen"] == str(run / "snapshots" / "step-000100.pt")
    first, last = (m["kinds"] for m in report["mouths"])
    assert first["fixed"]["said_correct_pct"] == 100.0 and first["fixed"]["turns"] == 2
    assert last["all"]["said_turn_correct_pct"] == 0.0 and last["composed"]["answers"] == 1
    chosen = torch.load(run / "chosen.pt", weights_only=False)
    assert chosen["step"] == 100
    assert "step-000100.pt (chosen) | 100 |" in format_choice(report)
    assert json.loads((run / "choose-mouth.json").read_text())["chosen"] == report["chosen"]
    torch.save({"model": own, "config": config, "step": 100}, run / "best.pt")
    assert main(["distill", "choose-mouth", str(run), "--data", str(pack), "--export",
                 str(tmp_path / "student")]) == 0
    again = json.loads((run / "choose-mouth.json").read_text())
    assert [m["step"] for m in again["mouths"]] == [100]  # best.pt is that snapshot
    given, _ = load_student(tmp_path / "student")
    for name, value in given.mouth.state_dict().items():
        torch.testing.assert_close(value.float(), own[name].float(), atol=1e-2, rtol=1e-2)


def test_a_run_that_kept_no_mouths_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(VoxloopError, match="--snapshot-every"):
        choose_mouth(tmp_path, DEFAULT_STUDENT, tmp_path / "pack.npz")
    assert main(["distill", "choose-mouth", str(tmp_path), "--data", "pack.npz"]) == 1
    assert "--snapshot-every" in capsys.readouterr().err
