"""The student evaluation runs end to end on a tiny set, and its judge is strict enough."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from tests.distill.student.fixtures import ANSWERS, tiny_config, tiny_examples, tiny_packed
from voxloop.codecs.config import CodecConfig
from voxloop.codecs.registry import random_codec
from voxloop.distill.evals.judge import judge
from voxloop.distill.evals.student import evaluate_student, format_report
from voxloop.distill.student.config import StudentEvalSettings
from voxloop.distill.student.model import Student, save_student


class FixedASR:
    """Hears the first fixture answer whatever it is given."""

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, samples, rate_hz: int) -> str:
        assert rate_hz == 16000 and len(samples) > 0
        self.calls += 1
        return ANSWERS[0]


def test_judge_needs_the_numbers_and_most_content_words():
    answer = "Seventeen times eleven is one hundred eighty seven."
    assert judge(answer, "17 times 11 is 187")
    assert not judge(answer, "seventeen times eleven is one hundred eighty six")
    cheetah = "The cheetah is the fastest land animal."
    assert judge(cheetah, "the cheetahs are the fastest land animal")
    assert not judge(cheetah, "the fastest animal")
    assert not judge("The capital of France is Paris.", "")


def test_judge_hears_numbers_as_whisper_writes_them():
    assert judge("Eighteen divided by ten is one point eight.", "18 divided by 10 is 1.8")
    assert judge("Five divided by eighteen is about zero point two eight.",
                 "5 divided by 18 is about 0.28.")
    assert not judge("Five divided by eighteen is about zero point two eight.",
                     "5 divided by 18 is about 0.2.")
    assert judge("Six degrees Fahrenheit is about minus fourteen point four degrees Celsius.",
                 "6 degrees Fahrenheit is about -14.4°C.")
    assert judge("The moon is about three hundred eighty four thousand kilometers from Earth.",
                 "The moon is about 384,000 km from earth.")
    assert judge("The chemical formula of water is H two O.",
                 "the chemical formula of water is H2O.")
    # units abbreviated, plural too
    assert judge("Two kilograms is about four point four pounds.", "2 kgs about 4.4 lbs")
    assert not judge("Two kilograms is about four point four pounds.", "2 gs about 4.4 lbs")


@pytest.mark.parametrize(("answer", "heard", "right"), [
    # numbers in order, with their signs and repeats: the result must be said
    ("Three minus nine is minus six.", "3 minus 9 is 6.", False),
    ("Three minus nine is minus six.", "3 - 9 = -6", True),
    ("Four minus two is two.", "4 minus 2.", False),
    # Whisper glues the sign of "is minus seven" to the word before it
    ("Zero minus seven is minus seven.", "0-7 is-7.", True),
    ("Seven minus zero is seven.", "7-0 is-7.", False),
    ("Nine divided by three is three.", "9 divided by 3 is 9.", False),
    ("Five plus three is eight.", "5 plus 8 is 3.", False),
    ("One degree Fahrenheit is about minus seventeen point two degrees Celsius.",
     "1°F is about 17.2°C.", False),
    # the word the answer carries is said, not one like it
    ("After Monday comes Tuesday.", "After Monday comes Thursday.", False),
    ("The capital of Germany is Berlin.", "The capital of Germany is Bern.", False),
    ("The capital of Brazil is Brasilia.", "The capital of Brazil is Brasília.", True),
    ("I don't know the capital of Mongolia.", "I know the capital of Mongolia.", False),
    # spelled letters exactly, in order
    ("Happy is spelled H, A, P, P, Y.", "Happy is spelled H-A-P-P-Y.", True),
    ("Happy is spelled H, A, P, P, Y.", "Happy is spelled H-P-Y.", False),
    ("Train is spelled T, R, A, I, N.", "Train this spell T, R, A, I, N.", True),
    ("Train is spelled T, R, A, I, N.", "Train this spell T, R, A, N.", False),
    ("House is spelled H, O, U, S, E.", "House is spelled E-S-U-O-H.", False),
])
def test_judge_wants_what_the_answer_says_not_most_of_its_words(answer, heard, right):
    assert judge(answer, heard) is right


def test_eval_end_to_end_on_a_tiny_set(tmp_path):
    examples = tiny_examples(4, split="heldout_voice") + tiny_examples(2, 1, "heldout_phrasing")
    for ex in examples:  # every prompt intends ANSWERS[0]; the teacher said it once per split
        ex.meta["prompt_answer"] = ANSWERS[0]
    examples[0] = dataclasses.replace(examples[0], intent="add")  # a composed answer
    data = tiny_packed(examples)
    data.save(tmp_path / "data.npz")
    torch.manual_seed(0)
    model = Student(tiny_config(text_vocab=len(data.vocab["text"]),
                                ctc_vocab=len(data.vocab["ctc"])))
    folder = save_student(model.eval(), data.vocab, tmp_path / "student")
    asr = FixedASR()
    settings = StudentEvalSettings(data=str(tmp_path / "data.npz"), out=str(tmp_path / "eval"),
                                   chunk_frames=3)
    metrics = evaluate_student(folder, settings, asr=asr, codec=random_codec(CodecConfig()))
    assert set(metrics["splits"]) == {"heldout_voice", "heldout_phrasing"}
    voice = metrics["splits"]["heldout_voice"]
    assert voice["n"] == 4 and metrics["all"]["n"] == 6
    assert voice["ceiling_correct_pct"] == 25.0  # the teacher codes of ANSWERS[0] only
    assert metrics["all"]["ceiling_wer_pct"] > 0
    assert 0 <= voice["text_token_acc_pct"] <= 100 and metrics["all"]["speed_x_rt"] >= 0
    assert voice["correct_intended_pct"] == 100.0  # the ASR always hears ANSWERS[0]
    assert voice["teacher_intended_pct"] == 25.0
    assert metrics["all"]["teacher_intended_pct"] == pytest.approx(100 / 3)
    assert asr.calls >= 6
    kinds = metrics["kinds"]
    assert (kinds["fixed"]["n"], kinds["composed"]["n"]) == (5, 1)
    # the ASR hears ANSWERS[0]: the teacher's codes of it are right (ex0 in each split)
    assert (kinds["composed"]["ceiling_correct_pct"], kinds["fixed"]["ceiling_correct_pct"]) \
        == (100.0, 20.0)
    assert "| composed | 1 |" in (tmp_path / "eval" / "report.md").read_text()
    rows = [json.loads(x) for x in (tmp_path / "eval" / "turns.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"transcript", "student_text", "correct"} <= set(rows[0])
    assert all(isinstance(r["heard"], str) and isinstance(r["heard_exact"], bool) for r in rows)
    heard = [r["heard_exact"] for r in rows if r["split"] == "heldout_voice"]
    assert voice["heard_exact_pct"] == 100 * sum(heard) / len(heard)
    for name in ("metrics.json", "report.md", "student-eval.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    assert "heldout_voice" in (tmp_path / "eval" / "report.md").read_text()
    assert metrics["speaks_with"] == "audio steps"
    assert "speaks with its audio steps" in (tmp_path / "eval" / "report.md").read_text()
    assert "| × RT (1 thread) |" in (tmp_path / "eval" / "report.md").read_text()
    two = {**metrics, "settings": {**metrics["settings"], "threads": 2}}
    assert "| × RT (2 threads) |" in format_report(two)


def test_right_answers_are_counted_apart_where_the_words_were_heard_and_misheard():
    from voxloop.distill.evals.student import _by_hearing

    rows = [{"heard_exact": h, "correct": c, "correct_intended": i}
            for h, c, i in [(True, True, True), (True, False, True), (False, True, False),
                            (False, False, False), (False, True, True)]]
    assert _by_hearing(rows) == {"heard_exact_pct": 40.0, "correct_when_heard_pct": 100.0,
                                 "correct_when_misheard_pct": pytest.approx(100 / 3)}
    plain = [{k: v for k, v in r.items() if k != "correct_intended"} for r in rows[:2]]
    assert _by_hearing(plain) == {"heard_exact_pct": 100.0, "correct_when_heard_pct": 50.0,
                                  "correct_when_misheard_pct": None}


def test_a_word_pointer_student_is_judged_on_a_pack_without_word_times(tmp_path):
    examples = tiny_examples(3, split="heldout_voice")
    data = tiny_packed(examples)
    assert data.word_frames is None
    data.save(tmp_path / "data.npz")
    torch.manual_seed(0)
    model = Student(tiny_config(text_vocab=len(data.vocab["text"]),
                                ctc_vocab=len(data.vocab["ctc"]), word_pointer=True))
    folder = save_student(model.eval(), data.vocab, tmp_path / "student")
    settings = StudentEvalSettings(data=str(tmp_path / "data.npz"), out=str(tmp_path / "eval"),
                                   chunk_frames=3)
    metrics = evaluate_student(folder, settings, asr=FixedASR(),
                               codec=random_codec(CodecConfig()))
    voice = metrics["splits"]["heldout_voice"]
    assert voice["n"] == 3 and 0 <= voice["text_token_acc_pct"] <= 100
    assert voice["audio0_acc_pct"] == 0  # the words' losses alone: no audio step was forced


def test_a_saved_run_is_judged_again_from_its_transcripts(tmp_path):
    """The judge changed: the run's verdicts, percentages and answer kinds follow from the
    transcripts it saved (`scripts/rejudge_eval.py`)."""
    from voxloop.distill.evals.student import judged_again, write_judged

    def row(split, intended, transcript, was):
        return {"split": split, "intent": "subtract", "answer_text": intended,
                "intended_text": intended, "transcript": transcript, "correct": was,
                "correct_intended": was, "teacher_intended": True, "text_exact": True,
                "heard_exact": True, "frames": 10, "generate_s": 0.01, "first_frame_s": 0.01}

    rows = [row("heldout_voice", "Three minus nine is minus six.", "3 minus 9 is 6.", True),
            row("heldout_phrasing", "Nine minus three is six.", "9 minus 3 is 6.", True)]
    part = {"n": 1, "correct_pct": 100.0, "correct_intended_pct": 100.0, "wer_pct": 0.0,
            "heard_exact_pct": 100.0, "correct_when_heard_pct": 100.0,
            "correct_when_misheard_pct": None}
    metrics = {"model": "m", "parameters_m": 1.0, "kinds": {}, "all": {**part, "n": 2},
               "splits": {"heldout_voice": dict(part), "heldout_phrasing": dict(part)}}
    again, rows_again = judged_again(metrics, rows)
    assert [r["correct_intended"] for r in rows_again] == [False, True]
    assert again["splits"]["heldout_voice"]["correct_intended_pct"] == 0.0
    assert again["splits"]["heldout_phrasing"]["correct_intended_pct"] == 100.0
    assert again["all"]["correct_pct"] == 50.0 and again["all"]["correct_when_heard_pct"] == 50
    assert again["kinds"]["composed"]["correct_pct"] == 50.0
    assert metrics["all"]["correct_pct"] == 100.0  # the run given is left as it was
    write_judged(again, rows_again, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json", "turns.jsonl", "report.md",
                                                    "student-eval.png"}
