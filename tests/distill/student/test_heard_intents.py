"""The heard-intents head: what it reads from misheard words, how it is kept, and when the
stepper lets it override the student's words."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import (
    ANSWERS,
    answer_turn,
    tiny_config,
    tiny_examples,
    tiny_packed,
    tiny_student_with_mouth,
)
from voxloop.cli import main
from voxloop.distill.evals.heard_intents import lean_trade, template_of, trade
from voxloop.distill.student.config import HeardIntentsConfig
from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.heard_intents import (
    FILENAME,
    fit_heard_intents,
    load_heard_intents,
    number_unit,
    save_heard_intents,
    slot_words,
    unit_words,
)
from voxloop.distill.student.model import Student, load_student, save_student, student_folder
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.rows import Phase, TurnProgress
from voxloop.distill.student.vocab import Tokenizer, answer_words, user_words
from voxloop.distill.teachers.domain.data import load_domain
from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE
from voxloop.errors import VoxloopError

QUICK = HeardIntentsConfig(fills_per_template=2, noisy_copies=3, epochs=60)
SHORT = SamplingOptions(max_text_tokens=5)  # a whole answer fits one draft


@pytest.fixture(scope="module")
def head():
    _, vocab = load_student("voxloop-student")
    return fit_heard_intents(vocab["ctc"], QUICK)


def test_it_names_the_intent_of_a_trained_phrasing_with_a_word_misheard(head):
    """Every fixed intent's trained phrasings of three words or more, one word each
    replaced by a word of another intent's: the head's most likely intent is still the
    phrasing's for at least 90 % (a head that read word order, or needed every word, would
    not be), and where it is sure enough to name an answer that answer is right for at
    least 97 %; unchanged, it names every one."""
    rng = np.random.default_rng(0)
    intents = load_domain()["intents"]
    clean = likely = sure = sure_right = total = 0
    for intent in intents:
        for i, phrasing in enumerate(intent["phrasings"]):
            words = user_words(phrasing)
            if i == HELDOUT_TEMPLATE or len(words) < 3:
                continue
            clean += head.fixed_answer(phrasing) == intent["answer"]
            other = intents[(intents.index(intent) + 1) % len(intents)]["phrasings"][0]
            words[int(rng.integers(len(words)))] = user_words(other)[0]
            misheard = " ".join(words)
            likely += head.labels[int(head.probabilities(misheard).argmax())] == intent["id"]
            answer = head.fixed_answer(misheard)
            sure += answer is not None
            sure_right += answer == intent["answer"]
            total += 1
    assert total > 300 and clean == total
    assert likely / total >= 0.9, (likely, total)
    assert sure / total >= 0.7 and sure_right / sure >= 0.97, (sure_right, sure, total)


def test_a_composed_question_gets_no_fixed_answer(head):
    for question in ("what is 7 plus 5", "what is the capital of france",
                     "how do you spell purple", "how many inches is 3 centimeters"):
        assert head.fixed_answer(question) is None, question


def test_a_question_outside_the_domain_gets_the_refusal_where_the_sound_was_read(head):
    import dataclasses

    from voxloop.distill.student.heard_intents import HeardIntents

    asked, sound = "can you set a timer for ten minutes", np.zeros(len(head.labels))
    assert head.read(asked, sound)[0] == head.refusal == load_domain()["fallback"]
    assert head.read(asked)[0] is None  # the words alone never name it
    quiet = HeardIntents(head.names, head.labels, head.weight, head.bias, head.answers,
                         dataclasses.replace(head.config, refuse=False))
    assert quiet.read(asked, sound) == (None, head.read(asked, sound)[1])
    assert all(answer != head.refusal for answer, _ in head.likeliest_answers(asked, 99, sound))


def test_slot_words_are_values_the_answers_write_never_question_words_or_letters():
    words = slot_words()
    assert words["17"] == ("seventeen",) and words["0"] == ("zero",) and words["20"] == ("twenty",)
    assert words["france"] == ("france",) and words["thursday"] == ("thursday",)
    assert words["centimeters"] == ("centimeters",) and words["coffee"] == ("coffee",)
    assert words["kingdom"] == ("kingdom",)  # of "united kingdom"
    assert "and" not in words and "the" not in words  # "antigua and barbuda", "the uk"
    assert not [w for w in words if len(w) == 1 and not w.isdigit()]


def test_the_unit_heard_with_the_number_is_the_one_the_answer_says_first():
    assert number_unit("how much is 2 centimeters in inches") == "centimeters"
    assert number_unit("how many centimeters are in 5 inches") == "inches"
    assert number_unit("convert 20 degrees celsius to fahrenheit") == "celsius"
    assert number_unit("how much is 2 in 19") is None  # the ears dropped it
    assert number_unit("what is 7 plus 5") is None and number_unit("how many inches") is None
    assert "degrees" not in unit_words() and "days" in unit_words()  # "degrees" names two


def test_of_the_units_heard_the_words_lean_to_the_numbers_own_first():
    model, vocab = load_student("voxloop-student")
    stepper = StudentStepper(model, Tokenizer(vocab))
    ids = stepper.tokenizer.text_ids
    inches, centimeters = ids["inches"], ids["centimeters"]
    turn = TurnProgress(slots={ids["two"]: 1, inches: 1, centimeters: 1},
                        first_unit=centimeters, text=[ids["two"]])
    logits = torch.zeros(len(vocab["text"]))
    logits[inches] = 3.0  # the unit asked for, where the answer says the number's own
    assert int(stepper.reading.lean(turn, logits).argmax()) == centimeters
    turn.first_unit = None  # without the order both are owed: the student's choice stands
    assert int(stepper.reading.lean(turn, logits).argmax()) == inches
    turn.first_unit, turn.text = centimeters, [ids["two"], centimeters]
    logits[centimeters] = 3.0  # once said, the other unit is owed again
    assert int(stepper.reading.lean(turn, logits).argmax()) == inches


def test_it_reads_slot_values_only_where_it_reads_a_composed_question(head):
    assert head.slots("can you add 19 to 19") == Counter({"nineteen": 2})
    assert head.slots("what is 17 plus 5") == Counter({"seventeen": 1, "five": 1})
    assert head.slots("what is the capital of france") == Counter({"france": 1})
    assert head.slots("what day comes after thursday") == Counter({"thursday": 1})
    assert head.slots("how many legs does a spider have") == Counter()  # a fixed answer
    assert head.slots("tell me a joke") == Counter()


def test_it_tells_how_likely_the_students_own_answer_is(head):
    joke = next(i["answer"] for i in load_domain()["intents"] if i["id"] == "joke")
    assert head.answer_prob("tell me a joke please", joke) > 0.5
    assert head.answer_prob("tell me a joke please", ANSWERS[0]) < 0.05  # composed words
    assert head.answer_prob("what is 7 plus 5", ANSWERS[0]) > 0.5
    assert head.answer_prob("what is 7 plus 5", joke) < 0.05
    refusal = load_domain()["fallback"]
    assert head.answer_prob("set a timer for ten minutes", refusal) > 0.3
    assert head.answer_prob("zzz qqq", joke) == 1.0  # no word it knows: nothing ruled out


def test_where_the_student_writes_a_slot_value_it_leans_to_one_it_heard(tiny):
    """Only at a slot value the student would write anyway, only by the bonus, and only
    until the heard value is written as often as it was heard."""
    model, tokenizer = tiny
    ids = tokenizer.text_ids
    model.heard_intents = Always(ANSWERS[0], max_logprob=0.0)
    try:
        stepper = StudentStepper(model, tokenizer)
        turn = TurnProgress(slots={ids["seven"]: 1})
        logits = torch.zeros(len(tokenizer.vocab["text"]))
        logits[ids["five"]] = 3.0  # another number, less than the bonus ahead
        assert int(stepper.reading.lean(turn, logits).argmax()) == ids["seven"]
        assert int(logits.argmax()) == ids["five"]  # the student's own logits stay
        logits[ids["five"]] = 5.0  # surer than the bonus
        assert int(stepper.reading.lean(turn, logits).argmax()) == ids["five"]
        logits[ids["paris"]] = 6.0  # not a slot value: no lean
        assert torch.equal(stepper.reading.lean(turn, logits), logits)
        logits[ids["paris"]] = 0.0
        logits[ids["five"]] = 3.0
        turn.text = [ids["seven"]]  # written as often as heard
        assert torch.equal(stepper.reading.lean(turn, logits), logits)
    finally:
        model.heard_intents = None


def test_it_is_kept_in_float16_beside_the_weights_and_read_back_the_same(head, tmp_path):
    path = save_heard_intents(head, tmp_path)
    assert path.name == FILENAME and path.stat().st_size < 2 * 2 * head.weight.numel() + 10**6
    back = load_heard_intents(tmp_path)
    assert back.labels == head.labels and back.config == head.config
    for heard in ("tell me a joke please", "how many legs does a spider", "uh hello there"):
        np.testing.assert_allclose(back.probabilities(heard), head.probabilities(heard),
                                   atol=2e-3)
    assert load_heard_intents(tmp_path / "none") is None


class Always:
    """A head sure of one fixed answer, whatever was heard (the stepper's side alone)."""

    def __init__(self, answer: str, max_logprob: float, own_prob: float = 0.0) -> None:
        self.answer, self.config = answer, HeardIntentsConfig(max_logprob=max_logprob)
        self.own_prob = own_prob

    def fixed_answer(self, heard: str, min_prob: float | None = None,
                     audio=None) -> str:
        return self.answer

    def answer_prob(self, heard: str, answer: str, audio=None) -> float:
        return self.own_prob

    def slots(self, heard: str, audio=None) -> Counter:
        return Counter()

    def likeliest_answers(self, heard: str, top: int, audio=None
                          ) -> list[tuple[str, float]]:
        return []  # nothing to score: its override alone (rescoring: test_rescore.py)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, vocab, _ = tiny_student_with_mouth(tmp_path_factory.mktemp("student"))
    return model, Tokenizer(vocab)


def _answer(model, tokenizer, codes, options: SamplingOptions | None = None):
    """(the words each step handed out, where it handed any; the turn's word ids; its
    frames)."""
    words, row, frames = answer_turn(model, tokenizer, [codes], options)
    return words, row.turn.text, frames


@pytest.mark.parametrize("seed", [0, 1])
def test_an_unsure_student_says_the_answer_the_head_names(tiny, seed):
    model, tokenizer = tiny
    codes = np.random.default_rng(seed).integers(0, 1024, (8, 9))
    own = generate(model, tokenizer, codes)
    hinted = ANSWERS[2] if answer_words(own.text) != answer_words(ANSWERS[2]) else ANSWERS[0]
    model.heard_intents = Always(hinted, max_logprob=0.0)  # any student is unsure enough
    try:
        words, ids, frames = _answer(model, tokenizer, codes)
        assert ids == tokenizer.encode_answer(hinted)
        assert words == [answer_words(hinted)]  # held back, then all at once
        np.testing.assert_array_equal(frames, model.mouth.say(torch.tensor([ids]))[0].numpy())
        off = _answer(model, tokenizer, codes, SamplingOptions(heard_intents=False))
        assert off[1] == own.text_ids
        model.heard_intents = Always(hinted, max_logprob=own.text_logprob - 1e-3)  # too sure
        sure = _answer(model, tokenizer, codes)
        assert sure[1] == own.text_ids and sum(sure[0], []) == answer_words(own.text)
        np.testing.assert_array_equal(sure[2], own.codes)
        model.heard_intents = Always("Zebras gallop sideways.", max_logprob=0.0)  # no such words
        assert _answer(model, tokenizer, codes)[1] == own.text_ids
        model.heard_intents = Always(hinted, max_logprob=0.0, own_prob=0.5)  # own not ruled out
        assert _answer(model, tokenizer, codes)[1] == own.text_ids
    finally:
        model.heard_intents = None


def _text_calls(model, tokenizer, codes) -> tuple[int, list[int]]:
    """Model calls until the words are settled, and the words."""
    stepper = StudentStepper(model, tokenizer, SHORT)
    state = stepper.start(1)
    stepper.advance(state, [codes])
    stepper.end_turn(state)
    calls = 0
    while state.rows[0].phase is Phase.TEXT:
        stepper.step(state)
        calls += 1
    return calls, state.rows[0].turn.text


def test_the_first_call_drafts_the_heads_answer_and_changes_only_how_many_calls(tiny):
    """A draft of the answer the student writes anyway settles it in one call; a wrong
    draft costs calls, never words (the head never overrides here: max_logprob -inf)."""
    model, tokenizer = tiny
    codes = np.random.default_rng(4).integers(0, 1024, (8, 9))
    own = generate(model, tokenizer, codes, SHORT)
    assert len(own.text_ids) >= 2
    try:
        model.heard_intents = Always(own.text, max_logprob=float("-inf"))
        assert _text_calls(model, tokenizer, codes) == (1, own.text_ids)
        other = next(a for a in ANSWERS if answer_words(a)[0] != answer_words(own.text)[0])
        model.heard_intents = Always(other, max_logprob=float("-inf"))
        calls, words = _text_calls(model, tokenizer, codes)
        assert calls > 1 and words == own.text_ids
    finally:
        model.heard_intents = None


def test_the_cli_writes_the_head_and_the_student_loads_it(tmp_path, capsys):
    _, _, folder = tiny_student_with_mouth(tmp_path / "student")
    assert load_student(folder)[0].heard_intents is None
    assert main(["distill", "heard-intents", str(folder), "--epochs", "5",
                 "--noisy-copies", "1", "--fills-per-template", "1", "--min-prob", "0.7"]) == 0
    assert "0.7 sure" in capsys.readouterr().out
    loaded = load_student(folder)[0].heard_intents
    assert loaded is not None and loaded.config.min_prob == 0.7


def test_a_student_without_a_mouth_gets_no_head_and_is_told_why(tmp_path, capsys):
    data = tiny_packed(tiny_examples(4))
    model = Student(tiny_config(text_vocab=len(data.vocab["text"]),
                                ctc_vocab=len(data.vocab["ctc"]))).eval()
    folder = save_student(model, data.vocab, tmp_path / "student")
    assert main(["distill", "heard-intents", str(folder)]) == 1
    assert "error: " in (err := capsys.readouterr().err) and "has no mouth" in err
    assert not (folder / FILENAME).exists()


def test_the_slot_lean_eval_of_a_student_without_a_head_says_so_before_any_work(tmp_path,
                                                                               capsys):
    _, _, folder = tiny_student_with_mouth(tmp_path / "student")
    assert main(["eval", "heard-intents", "--model", str(folder), "--slot-bonuses", "4",
                 "--data", str(tmp_path / "no-such-pack.npz")]) == 1
    err = capsys.readouterr().err
    assert "has no heard-intents head" in err and "voxloop distill heard-intents" in err


def test_the_trade_counts_only_unsure_turns_the_head_is_sure_of():
    turn = {"intended": "Hello! How can I help you today?", "head_prob": 0.8, "logprob": -1.0}
    turns = [
        {**turn, "student": "You're welcome!", "head_answer": turn["intended"]},  # fixed
        {**turn, "student": turn["intended"], "head_answer": "You're welcome!"},  # broken
        {**turn, "student": "Goodbye!", "head_answer": "You're welcome!"},  # still wrong
        {**turn, "student": "Goodbye!", "head_answer": None},  # a composed intent
        {**turn, "student": "Goodbye!", "head_answer": turn["intended"], "logprob": -0.1},
        {**turn, "student": "Goodbye!", "head_answer": turn["intended"], "head_prob": 0.3},
    ]
    turns = [{**t, "own_prob": 0.01} for t in turns]
    turns[1]["own_prob"] = 0.9  # the head does not rule the student's (right) answer out
    assert trade(turns, 0.5, -0.5) == {"fixed": 1, "broken": 1, "still_wrong": 1}
    assert trade(turns, 0.2, 0.0) == {"fixed": 3, "broken": 1, "still_wrong": 1}
    assert trade(turns, 0.2, 0.0, 0.05) == {"fixed": 3, "broken": 0, "still_wrong": 1}


def test_the_lean_trade_counts_turns_made_right_and_made_wrong_against_no_lean():
    turns = [{"intended": ANSWERS[0], "words": {"0.0": "Seven plus six is thirteen.",
                                                "4.0": ANSWERS[0]}},  # fixed
             {"intended": ANSWERS[0], "words": {"0.0": ANSWERS[0],
                                                "4.0": "Five plus five is ten."}},  # broken
             {"intended": ANSWERS[0], "words": {"0.0": ANSWERS[0], "4.0": ANSWERS[0]}}]
    assert lean_trade(turns, 4) == {"fixed": 1, "broken": 1}


def test_a_turn_id_without_its_phrasing_is_a_clear_error():
    assert template_of("water_formula-t11-festival:kal-0") == 11
    with pytest.raises(VoxloopError, match="names no phrasing"):
        template_of("ex0")


def test_the_bundled_student_carries_its_head_as_fitted_by_default():
    """The card's command (the defaults) made the bundled head; the folder stays small."""
    model, _ = load_student("voxloop-student")
    assert model.heard_intents is not None and model.heard_intents.config == HeardIntentsConfig()
    assert len(model.heard_intents.answers) == len(load_domain()["intents"])
    folder = student_folder("voxloop-student")
    assert sum(p.stat().st_size for p in folder.glob("*.safetensors")) < 40e6
