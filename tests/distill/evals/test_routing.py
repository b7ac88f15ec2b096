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
    hybrid,
    refusal_threshold,
    refusal_trade,
    score,
)
from voxloop.distill.evals.routing_report import format_routing


def _turn(split: str, logprob: float, student: bool, cascade: bool | None,
          heard: float = -0.8) -> dict:
    """A turn; ``cascade`` None: the cascade refuses it (having heard it ``heard`` surely)."""
    return {"split": split, "logprob": logprob, "student_right": student,
            "student_refuses": False, "cascade_right": bool(cascade),
            "cascade_refuses": cascade is None, "cascade_heard_logprob": heard}


ROWS = [_turn("valid", -0.05, True, True), _turn("valid", -0.2, True, False),
        _turn("valid", -0.9, False, True), _turn("valid", -1.2, True, None),
        _turn("valid", -1.5, False, True), _turn("valid", -2.0, True, False)]


def right_and_asked(rows, unsure_below, refusal_above=None):
    result = hybrid(rows, unsure_below, refusal_above)
    return result["right_pct"], result["asked_pct"], result["cascade_pct"]


def test_the_cascade_answers_the_unsure_turns_it_does_not_refuse():
    assert right_and_asked(ROWS, -math.inf) == (pytest.approx(200 / 3), 0.0, 0.0)
    # -1.5 and -2.0 asked: one gained, one lost
    assert right_and_asked(ROWS, -1.35) == (pytest.approx(200 / 3), pytest.approx(100 / 3),
                                            pytest.approx(100 / 3))
    # -1.2 asked too, but the cascade refuses it: the student's right answer stays...
    assert right_and_asked(ROWS, -1.05) == (pytest.approx(200 / 3), 50.0,
                                            pytest.approx(100 / 3))
    # ...unless Whisper heard it surely enough for its refusal to be taken
    assert right_and_asked(ROWS, -1.05, -0.7)[0] == pytest.approx(200 / 3)  # heard at -0.8
    assert right_and_asked(ROWS, -1.05, -0.8)[0] == pytest.approx(100 / 2)
    assert right_and_asked(ROWS, -0.55)[0] == pytest.approx(250 / 3)  # -0.9 gained
    assert right_and_asked(ROWS, 0.0) == (pytest.approx(200 / 3), 100.0, pytest.approx(500 / 6))
    refused = {**ROWS[0], "student_refuses": True, "student_right": False}
    assert right_and_asked([refused], -math.inf) == (100.0, 100.0, 100.0)  # asked anyway


def test_a_refusal_is_taken_where_whisper_is_surer_than_on_most_mishearings():
    rows = [_turn("valid", -1.0, True, None, heard) for heard in (-1.0, -0.8, -0.6, -0.4)]
    rows.append(_turn("valid", -1.0, True, True, heard=-0.01))  # not a refusal: not counted
    assert refusal_threshold(rows, 0.5) == pytest.approx(-0.7)
    assert refusal_threshold(rows, 1.0) == pytest.approx(-0.4)
    assert refusal_threshold(rows[4:], 0.9) is None  # it refused nothing


def test_the_threshold_with_most_right_and_fewest_asked_within_the_cap():
    assert choose_threshold(ROWS) == pytest.approx(-0.55)  # halfway between -0.9 and -0.2
    # -0.55 and 0 both get all three right: the one that asks about fewer turns
    rows = [_turn("valid", -0.1, True, True), _turn("valid", -1.0, False, True),
            _turn("valid", -2.0, True, True)]
    assert choose_threshold(rows) == pytest.approx(-0.55)
    assert choose_threshold(rows, max_asked_pct=70) == pytest.approx(-0.55)
    # asking about -2.0 alone gains nothing: within a cap of one turn in two, never ask
    assert choose_threshold(rows, max_asked_pct=50) == -math.inf
    # a student the cascade never beats keeps every turn
    assert choose_threshold([_turn("valid", -1.0, True, False)]) == -math.inf


def test_scores_per_split_at_the_thresholds():
    rows = [*ROWS, _turn("heldout_voice", -3.0, False, True),
            _turn("heldout_voice", -0.1, True, False),
            _turn("out_of_domain", -2.0, False, None, heard=-0.1)]  # a refusal is right
    rows[-1]["cascade_right"] = True
    scores = score(rows, -0.55, -0.3, chosen_on="valid")
    assert scores["heldout_voice"] == {
        "turns": 2, "student_pct": 50.0, "cascade_pct": 50.0, "hybrid_before_pct": 50.0,
        "hybrid_pct": 100.0, "asked_pct": 50.0, "answered_by_cascade_pct": 50.0,
        "switched_student_right": 0, "switched_cascade_right": 1}
    assert scores["out_of_domain"]["hybrid_pct"] == 100.0  # the refusal, heard surely
    assert "hybrid_out_loud_pct" not in scores["heldout_voice"]  # nothing was heard out loud
    loud = [{**r, "student_out_loud": r["student_right"], "cascade_out_loud": False}
            for r in rows if r["split"] == "heldout_voice"]
    assert hybrid(loud, -0.55, -0.3)["out_loud_pct"] == 50.0  # the cascade's, misheard
    assert score(loud, -0.55, -0.3)["heldout_voice"]["hybrid_before_out_loud_pct"] == 50.0
    assert score(rows, -0.55, -0.05)["out_of_domain"]["hybrid_pct"] == 0.0
    # "all": the in-domain splits measured on, not the one chosen on nor out of domain
    assert scores["all"] == scores["heldout_voice"]
    assert score(rows, -0.55, -0.3)["all"]["turns"] == 8
    assert scores["valid"]["hybrid_pct"] == pytest.approx(250 / 3)
    table = format_routing({"settings": {"choose_on": "valid", "max_asked_pct": 10.0,
                                         "refusal_quantile": 0.9},
                            "min_words_logprob": -0.55, "refusal_heard_logprob": -0.3,
                            "scores": scores})
    assert "below -0.550 (at most 10 % of its turns)" in table
    assert "Whisper scores at least -0.300 (above 0.9 of" in table
    assert "| heldout_voice | 2 | 50.0 | 50.0 | 50.0 | 100.0 | 50.0 | 50.0 | 0 / 1 |" in table


def test_the_refusal_trade_against_never_and_always_taking_one():
    rows = [*ROWS, _turn("out_of_domain", -2.0, False, None, heard=-0.1),
            _turn("out_of_domain", -2.0, False, None, heard=-0.9)]
    for row in rows[-2:]:
        row["cascade_right"] = True  # a refusal is right there
    trade = refusal_trade(rows, -1.05, -0.5)
    assert list(trade) == ["no refusal taken", "every refusal taken", "chosen"]
    # valid's -1.2 (the student right, the cascade refusing, heard at -0.8): kept unless
    # every refusal is taken; outside the domain only the sure refusal is taken when chosen
    assert trade["no refusal taken"] == {"valid": pytest.approx(200 / 3), "out_of_domain": 0.0}
    assert trade["every refusal taken"] == {"valid": 50.0, "out_of_domain": 100.0}
    assert trade["chosen"] == {"valid": pytest.approx(200 / 3), "out_of_domain": 50.0}
    table = format_routing({"settings": {"choose_on": "valid", "max_asked_pct": 10.0,
                                         "refusal_quantile": 0.9},
                            "min_words_logprob": -1.05, "refusal_heard_logprob": -0.5,
                            "scores": score(rows, -1.05, -0.5), "refusal_trade": trade})
    assert "| every refusal taken | 50.0 | 100.0 |" in table


def test_the_bundled_student_ships_thresholds_for_its_weights():
    from voxloop.distill.student.confidence import read_routing
    from voxloop.distill.student.model import student_folder

    routing = read_routing(student_folder("voxloop-student"))
    assert routing is not None  # measured for these very weights (a stale one reads None)
    assert -5 < routing.min_words_logprob < 0 and -5 < routing.refusal_heard_logprob < 0


@pytest.mark.slow
def test_a_real_run_keeps_the_threshold_for_the_engine(tmp_path):
    from tests.distill.data.helpers import TINY
    from voxloop.distill.data.dataset import iter_examples
    from voxloop.distill.data.synth import run_synth
    from voxloop.distill.evals.routing import evaluate_routing
    from voxloop.distill.student.confidence import Routing, read_routing
    from voxloop.distill.student.model import student_folder
    from voxloop.distill.student.vocab import answer_words
    from voxloop.distill.teachers.domain.data import load_domain
    from voxloop.errors import VoxloopError

    refusal = answer_words(load_domain()["fallback"])
    data = run_synth(replace(TINY, out=str(tmp_path / "ds")))
    student = tmp_path / "student"
    shutil.copytree(student_folder("voxloop-student"), student)
    settings = RoutingSettings(data=str(data), out=str(tmp_path / "out"), export=True,
                               limit=2)  # (a light test: other tests run real-time audio)
    result = evaluate_routing(student, settings, progress=False)
    turns = [json.loads(line) for line in (tmp_path / "out" / "turns.jsonl").open()]
    for split in settings.splits:
        examples = list(iter_examples(data, split))[:2]
        mine = [t for t in turns if t["split"] == split]
        assert [t["id"] for t in mine] == [e.id for e in examples]
        assert result["scores"][split]["turns"] == len(examples)
        for turn, example in zip(mine, examples, strict=True):
            assert turn["logprob"] <= 0 and turn["student"]
            if example.meta["asr"]:  # the same Whisper as the synth job, the same words
                assert turn["cascade_heard"] == example.asr_text
    for turn in turns:  # out loud off the split the thresholds are chosen on
        assert ("student_out_loud" in turn) == (turn["split"] != "valid")
    assert "hybrid_out_loud_pct" in result["scores"]["heldout_voice"]
    assert "Out loud" in (tmp_path / "out" / "routing.md").read_text()
    outside = [t for t in turns if t["split"] == "out_of_domain"]
    assert len(outside) == 2 * 3  # two questions, three held-out voices
    assert all(t["intended"] == load_domain()["fallback"] for t in outside)
    assert all(t["cascade_refuses"] == t["cascade_right"] for t in outside)
    for turn in turns:  # the rule's inputs, as the engine sees them
        assert turn["cascade_refuses"] == (answer_words(turn["cascade"]) == refusal)
        own = answer_words(turn["student"])
        assert turn["student_refuses"] == (own == refusal or not own)
    valid = [t for t in turns if t["split"] == "valid"]
    refusal_above = refusal_threshold(valid, settings.refusal_quantile)
    assert result["refusal_heard_logprob"] == refusal_above
    assert result["min_words_logprob"] == choose_threshold(valid, settings.max_asked_pct,
                                                           refusal_above)
    assert read_routing(student) == Routing(result["min_words_logprob"], refusal_above)
    for name in ("routing.json", "routing.md", "routing.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    again = evaluate_routing(student, replace(settings, rescore=True, max_asked_pct=100.0,
                                              export=False), progress=False)
    assert again["scores"]["all"]["turns"] == result["scores"]["all"]["turns"]  # read back
    assert again["min_words_logprob"] == choose_threshold(valid, 100.0, refusal_above)
    assert set(again["refusal_trade"]["chosen"]) == {*settings.splits, "out_of_domain"}
    assert read_routing(student) == Routing(result["min_words_logprob"], refusal_above)
    with pytest.raises(VoxloopError, match="--rescore reads the turns"):
        evaluate_routing(student, replace(settings, rescore=True, out=str(tmp_path / "no")),
                         progress=False)
    with pytest.raises(VoxloopError, match="--choose-on"):
        evaluate_routing(student, replace(settings, choose_on="heldout_voice",
                                          splits=("valid",)), progress=False)
    with pytest.raises(VoxloopError, match="never chosen on"):  # rescoring too
        evaluate_routing(student, replace(settings, rescore=True, choose_on="heldout_voice"),
                         progress=False)
    # rescored with fewer turns: only those are scored (and the out-of-domain ones asked for)
    fewer = evaluate_routing(student, replace(settings, rescore=True, limit=1, export=False,
                                              out_of_domain=False), progress=False)
    assert {split: fewer["scores"][split]["turns"] for split in settings.splits} == \
        dict.fromkeys(settings.splits, 1) and "out_of_domain" not in fewer["scores"]
    stale = [{**t, "words_sha256": "0" * 64} for t in turns]  # answered by other weights
    (tmp_path / "out" / "turns.jsonl").write_text("".join(json.dumps(t) + "\n" for t in stale))
    with pytest.raises(VoxloopError, match="answered by other weights"):
        evaluate_routing(student, replace(settings, rescore=True), progress=False)
