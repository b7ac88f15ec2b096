"""``voxloop distill renditions``: a clearer take replaces an answer everywhere it is kept."""

from __future__ import annotations

import numpy as np
import pytest

from tests.distill.student.fixtures import (
    ANSWERS,
    pointer_packed,
    tiny_examples,
    tiny_packed,
    with_word_frames,
)
from voxloop.distill.data.synth import AnswerCache
from voxloop.distill.data.targets import AnswerCodes, load_renditions
from voxloop.distill.evals.renditions import (
    RenditionSettings,
    choose_renditions,
    replace_answers,
)
from voxloop.distill.student.pack import PackedData
from voxloop.distill.student.retaken import retaken_answers
from voxloop.errors import VoxloopError
from voxloop.models import DEFAULT_CODEC


def test_replace_answers_changes_that_answer_in_every_turn_only():
    data = pointer_packed()
    before = {i: (data.answer(i).copy(), data.words(i).copy()) for i in range(len(data))}
    n_words = len(data.text(0))
    codes = np.arange(8 * 20, dtype=np.int16).reshape(8, 20)
    frames = np.arange(n_words, dtype=np.int16) * 3
    with pytest.raises(VoxloopError, match="word times"):
        replace_answers(data, {ANSWERS[0]: codes})
    changed = replace_answers(data, {ANSWERS[0]: codes}, {ANSWERS[0]: frames})
    said = [i for i in range(len(data)) if data.answer_text[i] == ANSWERS[0]]
    assert changed == len(said) >= 2  # train and valid turns alike
    for i in range(len(data)):
        if i in said:
            np.testing.assert_array_equal(data.answer(i), codes)
            np.testing.assert_array_equal(data.words(i), frames)
        else:
            np.testing.assert_array_equal(data.answer(i), before[i][0])
            np.testing.assert_array_equal(data.words(i), before[i][1])
    assert data.answer_offsets[-1] == data.answer_codes.shape[1]


def test_a_clear_take_replaces_a_garbled_one_in_cache_dataset_and_pack(tmp_path):
    """Real piper, codec with its assistant decoder, and Whisper: the pack's take of the
    answer said twice is random codes, which Whisper cannot hear as the answer."""
    examples = tiny_examples(5)  # ANSWERS[0] twice, the others once; random answer codes
    data = with_word_frames(tiny_packed(examples))
    data.vocab["codec"] = {"name": DEFAULT_CODEC}
    pack, dataset = tmp_path / "pack.npz", tmp_path / "dataset"
    (dataset / "answers").mkdir(parents=True)
    data.save(pack)
    report = choose_renditions(dataset, pack, RenditionSettings(takes=2, min_turns=2,
                                                                threads=1), progress=False)
    (answer,) = report["answers"]
    assert answer["text"] == ANSWERS[0] and answer["turns"] == 2
    own, *new = answer["takes"]
    assert not own["correct"], own  # random codes are not the answer
    assert answer["chosen"] > 0 and report["summary"]["replaced"] == 1
    chosen = answer["takes"][answer["chosen"]]
    assert (chosen["correct"], -chosen["wer"]) >= (own["correct"], -own["wer"])

    packed = PackedData.load(pack)
    key = AnswerCache(dataset / "answers").path(ANSWERS[0]).stem
    kept = load_renditions(dataset)[key]
    said = [i for i in range(len(packed)) if packed.answer_text[i] == ANSWERS[0]]
    for i in said:  # its words timed anew in the new take
        np.testing.assert_array_equal(packed.answer(i), kept)
        starts = packed.words(i)
        assert starts[0] == 0 and np.all(np.diff(starts) > 0) and starts[-1] < kept.shape[1]
    other = next(i for i in range(len(packed)) if i not in said)
    np.testing.assert_array_equal(packed.answer(other), data.answer(other))
    assert AnswerCache(dataset / "answers").path(ANSWERS[0]).is_file()
    # a later pack of the dataset takes the chosen codes over its turns' own
    np.testing.assert_array_equal(AnswerCodes(dataset, DEFAULT_CODEC, examples)(ANSWERS[0]),
                                  kept)
    assert retaken_answers(pack) == {ANSWERS[0]}

    # again, misheard answers only: the chosen take is now the pack's own, judged as before,
    # and new takes are drawn only if the judge still hears it wrong
    again = choose_renditions(dataset, pack, RenditionSettings(
        takes=2, min_turns=2, threads=1, misheard_only=True), progress=False)
    (answer,) = again["answers"]
    assert answer["takes"][0] == chosen
    assert len(answer["takes"]) == (1 if chosen["correct"] else 3)
    assert retaken_answers(pack) == {ANSWERS[0]}  # re-taken by the run before


def test_misheard_only_spends_takes_on_wrong_and_on_unclear_answers():
    from voxloop.distill.evals.renditions import Take

    right, wrong = Take("a cat says meow", 0.0, True), Take("a cow says moo", 0.5, False)
    mangled = Take("but cat says meow", 0.25, True)  # the key content is there
    everything = RenditionSettings()
    assert all(everything.needs_takes(t) for t in (right, wrong, mangled))
    wrong_only = RenditionSettings(misheard_only=True)
    assert [wrong_only.needs_takes(t) for t in (right, wrong, mangled)] == [False, True, False]
    unclear = RenditionSettings(misheard_only=True, misheard_above_wer_pct=10)
    assert [unclear.needs_takes(t) for t in (right, wrong, mangled)] == [False, True, True]


def test_no_answer_said_often_enough_is_a_clear_error(tmp_path):
    data = tiny_packed(tiny_examples(4))
    data.vocab["codec"] = {"name": DEFAULT_CODEC}
    data.save(tmp_path / "pack.npz")
    (tmp_path / "answers").mkdir()
    with pytest.raises(VoxloopError, match="--min-turns"):
        choose_renditions(tmp_path, tmp_path / "pack.npz", RenditionSettings(min_turns=3))
    with pytest.raises(VoxloopError, match="--say-as zebra: no answer re-taken has that word"):
        choose_renditions(tmp_path, tmp_path / "pack.npz", RenditionSettings(
            min_turns=1, say_as=("zebra=zeebra",)))


def test_say_as_respells_whole_words_only_and_a_malformed_pair_fails_first(tmp_path):
    settings = RenditionSettings(say_as=("dozen=dozzen", "voxloop = Voxeloop"))
    assert settings.spoken("A Dozen is twelve, dozens more.") == "A dozzen is twelve, dozens more."
    assert settings.spoken("I was built by the voxloop team.") == (
        "I was built by the Voxeloop team.")
    assert RenditionSettings().spoken("A dozen is twelve.") == "A dozen is twelve."
    with pytest.raises(VoxloopError, match="WORD=SPELLING"):
        choose_renditions(tmp_path, tmp_path / "missing.npz", RenditionSettings(
            say_as=("dozen",)))
