"""`eval routing`: how the hybrid's threshold is chosen and scored, and one real run (the
tiny synth plan, the bundled student, the real ASR teacher) that keeps the threshold
beside the student's weights, where the hybrid engine reads it."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace

import pytest

from voxloop.distill.evals.routing import (
    RoutingSettings,
    choose_threshold,
    format_routing,
    hybrid_right,
    score,
)


def _turn(split: str, logprob: float, student: bool, cascade: bool) -> dict:
    return {"split": split, "logprob": logprob, "student_right": student,
            "cascade_right": cascade}


ROWS = [_turn("valid", -0.05, True, True), _turn("valid", -0.2, True, False),
        _turn("valid", -0.9, False, True), _turn("valid", -1.5, False, True),
        _turn("valid", -2.0, True, False)]


def test_turns_below_the_threshold_are_the_cascades():
    assert hybrid_right(ROWS, -math.inf) == (60.0, 0.0)  # the student alone
    assert hybrid_right(ROWS, -1.2) == (60.0, 40.0)  # one gained, one lost
    assert hybrid_right(ROWS, -0.55) == (80.0, 60.0)
    assert hybrid_right(ROWS, 0.0) == (60.0, 100.0)  # the cascade alone


def test_the_threshold_with_most_right_and_fewest_handed_over():
    assert choose_threshold(ROWS) == pytest.approx(-0.55)  # halfway between -0.9 and -0.2
    # -0.55 and 0 both get all three right: the one that hands over fewer turns
    rows = [_turn("valid", -0.1, True, True), _turn("valid", -1.0, False, True),
            _turn("valid", -2.0, True, True)]
    assert choose_threshold(rows) == pytest.approx(-0.55)
    # a student the cascade never beats keeps every turn
    assert choose_threshold([_turn("valid", -1.0, True, False)]) == -math.inf


def test_scores_per_split_at_one_threshold():
    rows = [*ROWS, _turn("heldout_voice", -3.0, False, True),
            _turn("heldout_voice", -0.1, True, False)]
    scores = score(rows, -0.55)
    assert scores["heldout_voice"] == {
        "turns": 2, "student_pct": 50.0, "cascade_pct": 50.0, "hybrid_pct": 100.0,
        "routed_pct": 50.0, "routed": 1, "routed_student_right": 0, "routed_cascade_right": 1}
    assert scores["all"]["turns"] == 7 and scores["valid"]["hybrid_pct"] == 80.0
    table = format_routing({"settings": {"choose_on": "valid"}, "min_words_logprob": -0.55,
                            "scores": scores})
    assert "chosen on valid): -0.550" in table
    assert "| heldout_voice | 2 | 50.0 | 50.0 | 100.0 | 50.0 | 0 / 1 |" in table


@pytest.mark.slow
def test_a_real_run_keeps_the_threshold_for_the_engine(tmp_path):
    from tests.distill.data.helpers import TINY
    from voxloop.distill.data.dataset import iter_examples
    from voxloop.distill.data.synth import run_synth
    from voxloop.distill.evals.routing import evaluate_routing
    from voxloop.distill.student.confidence import read_threshold
    from voxloop.distill.student.model import student_folder
    from voxloop.errors import VoxloopError

    data = run_synth(replace(TINY, out=str(tmp_path / "ds")))
    student = tmp_path / "student"
    shutil.copytree(student_folder("voxloop-student"), student)
    settings = RoutingSettings(data=str(data), out=str(tmp_path / "out"), export=True)
    result = evaluate_routing(student, settings, progress=False)
    turns = [json.loads(line) for line in (tmp_path / "out" / "turns.jsonl").open()]
    for split in settings.splits:
        examples = list(iter_examples(data, split))
        mine = [t for t in turns if t["split"] == split]
        assert [t["id"] for t in mine] == [e.id for e in examples]
        assert result["scores"][split]["turns"] == len(examples)
        for turn, example in zip(mine, examples, strict=True):
            assert turn["logprob"] <= 0 and turn["student"]
            # the synth job's cascade where it ran the ASR teacher, else one run now
            assert turn["cascade_ran_in_synth"] == bool(example.meta["asr"])
            if example.meta["asr"]:
                assert turn["cascade"] == example.answer_text
    valid = [t for t in turns if t["split"] == "valid"]
    assert not any(t["cascade_ran_in_synth"] for t in valid)
    assert result["min_words_logprob"] == choose_threshold(valid)
    assert read_threshold(student) == result["min_words_logprob"]
    for name in ("routing.json", "routing.md", "routing.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    with pytest.raises(VoxloopError, match="--choose-on"):
        evaluate_routing(student, replace(settings, choose_on="heldout_voice",
                                          splits=("valid",)), progress=False)
