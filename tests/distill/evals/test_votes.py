"""Votes over alignments: which ears, which wording wins, how `eval votes` scores them."""

from __future__ import annotations

import pytest

from voxloop.distill.evals.votes import format_votes, score
from voxloop.distill.student.votes import skips, winner


def test_ears_are_spread_over_one_frame():
    assert skips(640, 1) == [0]
    assert skips(640, 4) == [0, 160, 320, 480]
    assert skips(640, 3) == [0, 213, 426]
    with pytest.raises(ValueError, match="at least 1"):
        skips(640, 0)


def test_the_majority_of_the_answers_that_spoke_wins():
    assert winner(["a", "b", "b"], [True, True, True]) == 1
    assert winner(["a", "b", "c"], [True, True, True]) == 0  # a tie: the unshifted ear
    assert winner(["b", "a", "b", "a"], [False, True, True, True]) == 1  # 0 did not speak
    assert winner(["a", "b"], [False, False]) == 0


def _alignment(text: str, right: bool, correct: bool) -> dict:
    return {"text": text, "spoke": True, "transcript": text, "words_right": right,
            "correct": correct}


def test_scores_per_vote_count_and_per_alignment():
    good, bad = _alignment("nine", True, True), _alignment("one", False, False)
    rows = [  # alignments 0, 160, 320 samples; 3 ears use all of them, 1 ear the first
        {"split": "heldout_voice", "alignments": [bad, good, good]},
        {"split": "heldout_voice", "alignments": [good, good, bad]},
        {"split": "heldout_phrasing", "alignments": [bad, bad, good]},
        {"split": "heldout_phrasing", "alignments": [good, {**good, "correct": False}, bad]},
    ]
    result = score(rows, {1: [0], 3: [0, 160, 320]}, [0, 160, 320])
    voice, phrasing = result["heldout_voice"], result["heldout_phrasing"]
    assert voice["votes"]["1"] == {"words_right": 50.0, "correct": 50.0}
    assert voice["votes"]["3"] == {"words_right": 100.0, "correct": 100.0}
    assert phrasing["votes"]["3"]["words_right"] == 50.0  # "one" twice beats "nine" once
    assert result["all"]["turns"] == 4 and result["all"]["votes"]["3"]["words_right"] == 75.0
    assert voice["single"]["320"]["correct"] == 50.0
    table = format_votes({"scores": result, "alignments_samples": [0, 160, 320]})
    assert "| 3 | 100.0 / 100.0 | 50.0 / 50.0 | 75.0 / 75.0 |" in table
    assert "| one, 10.0 ms in |" in table
