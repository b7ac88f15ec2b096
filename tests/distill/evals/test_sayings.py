"""The mouth's remembered answers said other ways where the judge mishears them, and the
clearest kept in the student's table with the way to say it again."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_student_with_mouth
from voxloop.cli import main
from voxloop.codecs.config import CodecConfig
from voxloop.codecs.registry import random_codec
from voxloop.distill.evals.renditions import Take
from voxloop.distill.evals.sayings import SayingSettings, choose_sayings, way_name
from voxloop.distill.evals.student import decode_codes
from voxloop.distill.student.model import load_student
from voxloop.errors import VoxloopError


def _said_now(mouth, words: list[int]) -> torch.Tensor:
    table, mouth.said_codes = mouth.said_codes, None
    try:
        return mouth.say(torch.tensor([words]), **table.way(words))[0]
    finally:
        mouth.said_codes = table


def test_ways_are_tried_in_order_and_named():
    settings = SayingSettings(paces=(1.0, 1.2), predicted_paces=(1.0,), samples=2,
                              temperature=0.7, seed=3)
    ways = settings.ways()
    assert ways == [{"pace": 1.2}, {"pace": 1.0, "remembered": False},
                    {"temperature": 0.7, "seed": 3000}, {"temperature": 0.7, "seed": 3001}]
    assert [way_name(w) for w in [{}] + ways] == [
        "greedy", "pace 1.2", "predicted lengths", "sampled at 0.7, seed 3000",
        "sampled at 0.7, seed 3001"]
    right, wrong, mangled = (Take("a", 0.0, True), Take("b", 0.5, False),
                             Take("c", 0.25, True))
    assert [settings.needs_others(t) for t in (right, wrong, mangled)] == [False, True, False]
    unclear = SayingSettings(misheard_above_wer_pct=10)
    assert [unclear.needs_others(t) for t in (right, wrong, mangled)] == [False, True, True]
    # right once, but not under every noisy listen: said other ways too, and ranked
    # after a take right under more of them
    edge, steady = Take("a", 0.0, True, 1, 2), Take("a", 0.1, True, 2, 2)
    assert settings.needs_others(edge) and not settings.needs_others(steady)
    assert sorted([wrong, edge, steady], key=Take.rank) == [steady, edge, wrong]


class EdgeASR:
    """Hears the answer in the clean audio only: any noise turns it to another word."""

    def __init__(self, clean) -> None:
        self.clean, self.heard = clean, []

    def transcribe(self, samples, rate_hz: int) -> str:
        self.heard.append(samples)
        return "Paris." if np.array_equal(samples, self.clean) else "Perris."


def test_a_take_right_only_on_a_knifes_edge_is_not_steady():
    from voxloop.distill.evals.renditions import TakeJudge, with_noise

    codec = random_codec(CodecConfig())
    codes = np.random.default_rng(0).integers(0, CodecConfig().cardinality, (2, 6))
    clean = decode_codes(codec, codes)
    asr = EdgeASR(clean)
    take = TakeJudge(codec, asr, codebooks=2, listens=3, snr_db=35.0)(codes, "Paris.")
    assert take.correct and (take.noisy_right, take.noisy) == (0, 3) and not take.steady
    assert len(asr.heard) == 4 and not np.array_equal(asr.heard[1], asr.heard[2])
    assert TakeJudge(codec, asr, codebooks=2)(codes, "Paris.") == Take("Paris.", 0.0, True)
    noisy = with_noise(clean, 35.0, seed=1)
    snr_db = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2)
                           / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert abs(snr_db - 35.0) < 0.5 and np.array_equal(noisy, with_noise(clean, 35.0, 1))


def test_sampled_sayings_differ_by_seed_and_repeat_by_seed(tmp_path):
    model, _, _ = tiny_student_with_mouth(tmp_path / "student")
    mouth, words = model.mouth, torch.tensor([[3, 4, 5]])
    mouth.said_codes = None
    greedy = mouth.say(words)[0]
    a, b = (mouth.say(words, temperature=1.0, seed=s)[0] for s in (0, 1))
    assert a.shape == greedy.shape == (mouth.config.k_out, 9)  # the remembered lengths
    assert torch.equal(a, mouth.say(words, temperature=1.0, seed=0)[0])
    assert not torch.equal(a, b)
    assert mouth.say(words, pace=2.0)[0].shape[1] == 18
    predicted = mouth.say(words, remembered=False)[0]
    assert predicted.shape[1] == int(mouth.word_frames(
        words, mouth.encode(words).log_frames).sum())


def test_the_clearest_saying_is_kept_with_its_way(tmp_path):
    """Real codec (its assistant decoder) and Whisper judge what the tiny mouth says: its
    untrained codes are heard as nothing like its answers, so every way is tried, and the
    table keeps, per answer, the codes of the way judged clearest."""
    _, _, folder = tiny_student_with_mouth(tmp_path / "student")
    settings = SayingSettings(paces=(1.2,), predicted_paces=(1.0,), samples=2, threads=1)
    report = choose_sayings(folder, settings, progress=False)
    assert report["summary"]["answers"] == 2
    model, _ = load_student(folder)
    table = model.mouth.said_codes
    for answer, words in zip(report["answers"], ([3, 4, 5], [6, 7]), strict=True):
        assert answer["ways"] == ["greedy", "pace 1.2", "predicted lengths",
                                  "sampled at 0.5, seed 0", "sampled at 0.5, seed 1"]
        takes = [Take(**t) for t in answer["takes"]]
        assert not takes[0].correct  # random weights do not say the answer
        assert answer["chosen"] == min(range(len(takes)), key=lambda i: takes[i].rank())
        way = table.way(words)
        assert way_name(way) == answer["ways"][answer["chosen"]]
        assert torch.equal(table.get(torch.tensor(words)), _said_now(model.mouth, words))

    # again: the kept saying is judged first, as it was judged when chosen
    again = choose_sayings(folder, settings, progress=False)
    for before, after in zip(report["answers"], again["answers"], strict=True):
        assert after["takes"][0] == before["takes"][before["chosen"]]
        assert after["ways"][0] == before["ways"][before["chosen"]]


def test_other_ways_stop_at_the_first_right_under_every_listen(tmp_path, monkeypatch):
    """Each answer: the saying now misheard, the next way right but not under every noisy
    listen, the one after right under all: the ways after it are not tried."""
    from voxloop.distill.evals import renditions

    class ScriptedJudge:
        def __init__(self, *args) -> None:
            self.calls = {}

        def __call__(self, codes, text: str) -> Take:
            n = self.calls[text] = self.calls.get(text, 0) + 1
            return [Take("no", 1.0, False), Take(text, 0.0, True, 1, 2),
                    Take(text, 0.0, True, 2, 2)][min(n, 3) - 1]

    monkeypatch.setattr(renditions, "TakeJudge", ScriptedJudge)
    _, _, folder = tiny_student_with_mouth(tmp_path / "student")
    report = choose_sayings(folder, SayingSettings(paces=(1.2, 1.3), samples=2, threads=1),
                            progress=False)
    for answer in report["answers"]:
        assert answer["ways"] == ["greedy", "pace 1.2", "pace 1.3"] and answer["chosen"] == 2
    summary = report["summary"]
    assert (summary["right_now"], summary["right_chosen"]) == (0, 2)
    assert (summary["steady_now"], summary["steady_chosen"]) == (0, 2)


def test_again_from_judges_only_the_answers_an_earlier_report_left_misheard(tmp_path,
                                                                           monkeypatch):
    """An earlier report: one answer heard right and steady, one whose transcript the
    judge now rejects (a dropped sign), one right but not under every listen. Only the
    last two are judged again; the first keeps its saying unjudged."""
    import json

    from voxloop.distill.evals import renditions, sayings
    from voxloop.distill.student.vocab import Tokenizer

    judged = []

    class RightJudge:
        def __init__(self, *args) -> None:
            pass

        def __call__(self, codes, text: str) -> Take:
            judged.append(text)
            return Take(text, 0.0, True, 2, 2)

    monkeypatch.setattr(renditions, "TakeJudge", RightJudge)
    _, _, folder = tiny_student_with_mouth(tmp_path / "student")
    _, vocab = load_student(folder)
    texts = [Tokenizer(vocab).decode_answer(w) for w in ([3, 4, 5], [6, 7])]
    report = {"answers": [
        {"text": texts[0], "chosen": 0, "takes": [asdict(Take(texts[0], 0.0, True, 2, 2))]},
        {"text": texts[1], "chosen": 1, "takes": [asdict(Take("no", 1.0, False)),
                                                   asdict(Take(texts[1], 0.0, True, 1, 2))]},
        {"text": "Three minus nine is minus six.", "chosen": 0,
         "takes": [asdict(Take("3 minus 9 is 6.", 0.2, True, 2, 2))]}]}
    path = tmp_path / "before.json"
    path.write_text(json.dumps(report))
    assert sayings.misheard_in(path) == {texts[1], "Three minus nine is minus six."}
    choose_sayings(folder, SayingSettings(samples=0, threads=1), progress=False)
    table_before, judged[:] = load_student(folder)[0].mouth.said_codes, []
    again = choose_sayings(folder, SayingSettings(again_from=str(path), samples=0,
                                                  threads=1), progress=False)
    assert judged == [texts[1]]
    assert (again["summary"]["answers"], again["summary"]["answers_kept_unjudged"]) == (1, 1)
    kept = load_student(folder)[0].mouth.said_codes
    assert torch.equal(kept.get(torch.tensor([3, 4, 5])),
                       table_before.get(torch.tensor([3, 4, 5])))
    assert again["model_sha256"] and again["answers"][0]["text"] == texts[1]
    path.write_text(json.dumps({**report, "model_sha256": "0" * 64}))
    with pytest.raises(VoxloopError, match="judged another student's sayings"):
        choose_sayings(folder, SayingSettings(again_from=str(path)), progress=False)
    path.write_text("{}")
    with pytest.raises(VoxloopError, match="not a report of"):
        choose_sayings(folder, SayingSettings(again_from=str(path)), progress=False)


def test_the_command_writes_the_table_and_sampling_needs_a_temperature(tmp_path, capsys):
    _, _, folder = tiny_student_with_mouth(tmp_path / "student")
    with pytest.raises(VoxloopError, match="--temperature must be above 0"):
        choose_sayings(folder, SayingSettings(temperature=0.0), progress=False)
    with pytest.raises(VoxloopError, match="--listens -1"):
        choose_sayings(folder, SayingSettings(listens=-1), progress=False)
    assert main(["distill", "sayings", str(folder), "--samples", "0", "--paces", "1.0",
                 "--predicted-paces", "1.0", "--threads", "1",
                 "--report", str(tmp_path / "sayings.json")]) == 0
    out = capsys.readouterr().out
    assert "2 remembered answers judged" in out and (tmp_path / "sayings.json").is_file()


def test_an_answer_the_mouth_never_learned_is_recorded_in_the_assistants_voice(tmp_path, capsys):
    """A copy of the bundled student whose table lacks the refusal: ``--recorded-only``
    keeps every saying as it was (none judged) and records the refusal (real piper, the
    student's codec, Whisper judging: a take of the assistant's voice is heard right)."""
    import shutil

    from voxloop.distill.student.model import student_folder
    from voxloop.distill.student.said_codes import (
        RECORDED,
        SaidCodes,
        load_said_codes,
        save_said_codes,
    )
    from voxloop.distill.student.vocab import Tokenizer

    folder = tmp_path / "student"
    shutil.copytree(student_folder("voxloop-student"), folder)
    table = load_said_codes(folder)
    remembered = [(list(w), c) for w, c in table.items() if RECORDED not in table.way(w)]
    save_said_codes(SaidCodes([w for w, _ in remembered], [c for _, c in remembered],
                              [table.way(w) for w, _ in remembered]), folder)
    with pytest.raises(VoxloopError, match="--recorded-takes -1"):
        choose_sayings(folder, SayingSettings(recorded_takes=-1), progress=False)
    assert main(["distill", "sayings", str(folder), "--recorded-only", "--recorded-takes", "3",
                 "--threads", "1"]) == 0
    assert "1 answers the mouth never learned recorded in the assistant's voice: 1 heard " \
        "right" in capsys.readouterr().out
    model, vocab = load_student(folder)
    after = model.mouth.said_codes
    refusal = Tokenizer(vocab).encode_answer(model.heard_intents.refusal)
    assert after.way(refusal) == {RECORDED: "piper:joe"}
    assert len(after) == len(remembered) + 1
    for words, codes in remembered[::300]:
        assert torch.equal(after.get(torch.tensor(words)), codes)
        assert after.way(words) == table.way(words)
    assert way_name(after.way(refusal)) == "recorded (piper:joe)"
    # again: the recorded take is judged again (heard right: kept, no new take), not counted
    # among the remembered answers
    again = choose_sayings(folder, SayingSettings(recorded_only=True, recorded_takes=3,
                                                  listens=0, threads=1), progress=False)
    assert again["summary"]["answers"] == 0 and again["summary"]["answers_recorded"] == 1
    assert len(again["answers"][0]["takes"]) == 1
    model, _ = load_student(folder)
    assert torch.equal(model.mouth.said_codes.get(torch.tensor(refusal)),
                       after.get(torch.tensor(refusal)))
