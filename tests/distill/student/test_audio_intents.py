"""The audio intents head: what it reads from a turn's codes, how it is kept and trained,
how the heard-intents head weighs it, and that the stepper hands it the whole turn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import ANSWERS, tiny_student_with_mouth
from voxloop.cli import main
from voxloop.distill.student.audio_intents import (
    FILENAME,
    AudioIntents,
    AudioIntentsConfig,
    load_audio_intents,
    save_audio_intents,
)
from voxloop.distill.student.audio_intents_train import (
    check_settings,
    more_questions,
    pack_turns,
    spoken_turns,
)
from voxloop.distill.student.config import AudioIntentsTrainSettings, HeardIntentsConfig
from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.heard_intents import HeardIntents
from voxloop.distill.student.model import load_student
from voxloop.distill.student.rows import RowStream
from voxloop.distill.student.vocab import Tokenizer, answer_words
from voxloop.errors import VoxloopError

LABELS = ("add", "fallback", "joke")
CONFIG = AudioIntentsConfig(k_in=2, user_vocab=16, latent_dim=8, residual_weight=0.5,
                            labels=LABELS, width=12, layers=2, kernel=3)


def tiny_head(seed: int = 0) -> AudioIntents:
    torch.manual_seed(seed)
    return AudioIntents(CONFIG, torch.randn(2 * 16, 8)).eval()


def test_a_turn_reads_the_same_alone_and_padded_in_a_batch():
    """Padding frames neither raise the peak nor count in the mean: a short turn batched
    with a longer one gets the logits it gets alone."""
    head = tiny_head()
    rng = np.random.default_rng(0)
    short, long = rng.integers(0, 16, (2, 7)), rng.integers(0, 16, (2, 15))
    codes = torch.zeros(2, 2, 15, dtype=torch.long)
    codes[0, :, :7], codes[1] = torch.from_numpy(short), torch.from_numpy(long)
    mask = torch.zeros(2, 15, dtype=torch.bool)
    mask[0, :7], mask[1] = True, True
    with torch.no_grad():
        batched = head(codes, mask)
    alone = head.log_probs(short)
    np.testing.assert_allclose(torch.log_softmax(batched[0], -1).numpy(), alone, atol=1e-5)
    assert np.isclose(np.exp(alone).sum(), 1.0, atol=1e-5)
    extra = np.concatenate([short, rng.integers(0, 16, (1, 7))])  # a level it does not hear
    np.testing.assert_array_equal(head.log_probs(extra), alone)
    with pytest.raises(ValueError, match="expected"):
        head.log_probs(short[:1])  # fewer levels than it hears
    with pytest.raises(ValueError, match="codebooks"):
        AudioIntents(CONFIG, torch.randn(16, 8))  # books of another shape


def test_it_is_kept_in_float16_without_the_students_books(tmp_path):
    head = tiny_head()

    class Student:  # what load_audio_intents reads of a student
        user_codebooks = head.books

    path = save_audio_intents(head, tmp_path)
    assert path.name == FILENAME
    back = load_audio_intents(tmp_path, Student())
    assert back.config == head.config
    codes = np.random.default_rng(1).integers(0, 16, (2, 9))
    np.testing.assert_allclose(back.log_probs(codes), head.log_probs(codes), atol=2e-2)
    assert "books" not in back.state_dict()  # the student's: never copied
    assert load_audio_intents(tmp_path / "none", Student()) is None


def words_head(audio_weight: float = 1.0) -> HeardIntents:
    """Words that know ``tell`` (for the joke) and ``plus`` (for add)."""
    weight = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    return HeardIntents(["tell", "plus"], list(LABELS), weight, torch.zeros(3),
                        {"joke": ANSWERS[2]}, HeardIntentsConfig(audio_weight=audio_weight))


def test_the_words_probabilities_are_multiplied_by_the_sounds():
    words = words_head()
    sure_add = np.log(np.array([0.98, 0.01, 0.01]))
    alone = words.probabilities("tell me")
    assert words.labels[int(alone.argmax())] == "joke"
    both = words.probabilities("tell me", sure_add)
    assert words.labels[int(both.argmax())] == "add"
    expected = alone * np.exp(sure_add)
    np.testing.assert_allclose(both, expected / expected.sum(), rtol=1e-5)
    # no word it knows: the sound alone, where the words alone read nothing
    assert words.probabilities("zzz") is None
    np.testing.assert_allclose(words.probabilities("zzz", sure_add), np.exp(sure_add), rtol=1e-5)
    # weighed at 0 the sound changes nothing
    np.testing.assert_allclose(words_head(0.0).probabilities("tell me", sure_add), alone,
                               rtol=1e-6)
    assert words.read("tell me", sure_add) == (None, pytest.approx(float(both.max())))


def test_a_label_the_sound_head_lacks_is_neither_favoured_nor_ruled_out():
    words = words_head()
    aligned = words.audio_logprobs(("joke", "add"), np.log(np.array([0.7, 0.3])))
    np.testing.assert_allclose(aligned, np.log([0.3, 0.5, 0.7]), rtol=1e-6)


class SureOfJoke:
    """An audio head sure the joke was asked, keeping the codes it read."""

    config = dataclasses.replace(CONFIG, labels=("joke", "add"))

    def __init__(self) -> None:
        self.read = []

    def log_probs(self, codes: np.ndarray) -> np.ndarray:
        self.read.append(codes.copy())
        return np.log(np.array([0.99, 0.01]))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, vocab, _ = tiny_student_with_mouth(tmp_path_factory.mktemp("student"))
    return model, Tokenizer(vocab)


def said_after(model, tokenizer, chunks: list[np.ndarray]) -> str:
    """The answer to a turn heard in ``chunks``, the last fed with ``<sep>``."""
    stepper = StudentStepper(model, tokenizer, SamplingOptions(max_text_tokens=5))
    state = stepper.start(1)
    for chunk in chunks[:-1]:
        stepper.advance(state, [chunk])
    stepper.end_turn(state, heard_last=[chunks[-1]])
    while not state.done:
        stepper.step(state)
    return tokenizer.decode_answer(state.rows[0].turn.text)


def words_that_know_nothing(**config) -> HeardIntents:
    return HeardIntents(["zzz"], ["joke", "add"], torch.zeros(1, 2), torch.zeros(2),
                        {"joke": ANSWERS[2]}, HeardIntentsConfig(rescore_top=0, **config))


def test_the_stepper_reads_the_whole_turn_once_and_says_what_it_points_to(tiny):
    """The head gets every code of the turn (the chunks heard and the last ones fed with
    ``<sep>``), once; where the words know nothing and the sound is sure of the joke, the
    student says the joke; weighed at 0, the head is never asked."""
    model, tokenizer = tiny
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 1024, (8, n)) for n in (4, 3, 5)]
    model.heard_intents, model.audio_intents = words_that_know_nothing(), SureOfJoke()
    try:
        said = said_after(model, tokenizer, chunks)
        assert len(model.audio_intents.read) == 1
        np.testing.assert_array_equal(model.audio_intents.read[0], np.concatenate(chunks, 1))
        assert answer_words(said) == answer_words(ANSWERS[2])
        model.heard_intents = words_that_know_nothing(audio_weight=0.0)
        model.audio_intents = SureOfJoke()
        assert answer_words(said_after(model, tokenizer, chunks)) != answer_words(ANSWERS[2])
        assert model.audio_intents.read == []
    finally:
        model.heard_intents = model.audio_intents = None


def test_a_rollback_forgets_the_codes_after_the_mark(tiny):
    model, _ = tiny
    from voxloop.distill.student.model import KVCache

    row = RowStream(KVCache.empty(model.config, 1, 32), 0)
    row.turn.codes, row.turn.heard = np.zeros((8, 5), np.int64), [0] * 5
    row.mark()
    row.turn.codes = np.concatenate([row.turn.codes, np.ones((8, 4), np.int64)], 1)
    row.turn.heard = [0] * 9
    row.turn.audio = np.zeros(2)
    row.rollback()
    np.testing.assert_array_equal(row.turn.codes, np.zeros((8, 5)))
    assert row.turn.audio is None  # read again from the turn that goes on
    row.reset()
    assert row.turn.codes is None


def test_it_trains_on_a_pack_and_refuses_one_without_intents(tmp_path):
    """A few steps on a small pack, through the command line: the file is written beside
    the bundled student's weights and loads with the student; packs it cannot hear are
    refused with a clear error."""
    import shutil

    from tests.distill.student.fixtures import tiny_examples, tiny_packed

    folder = tmp_path / "student"
    shutil.copytree(student_folder_of("voxloop-student"), folder)
    pack = tmp_path / "pack.npz"  # codes of 8 levels, of which the student hears 4
    tiny_packed(tiny_examples(12) + tiny_examples(4, seed=1, split="valid")).save(pack)
    assert main(["distill", "audio-intents", str(folder), "--data", str(pack), "--steps", "3",
                 "--batch-size", "4", "--outside-per-question", "0", "--more-per-phrasing", "0",
                 "--threads", "1"]) == 0
    model, _ = load_student(folder)
    labels = ("intent0", "intent1", "intent2", "intent3")
    assert model.audio_intents.config.labels == labels
    rng = np.random.default_rng(0)
    assert model.audio_intents.log_probs(rng.integers(0, 1024, (4, 30))).shape == (4,)
    bad = tmp_path / "bad.npz"
    np.savez(bad, user_codes=np.zeros((4, 3), np.int16))
    with pytest.raises(VoxloopError, match="not a packed dataset"):
        pack_turns(str(bad), 4, 1024)
    with pytest.raises(VoxloopError, match="levels"):
        pack_turns(str(pack), 9, 1024)
    with pytest.raises(VoxloopError, match="other ears"):
        pack_turns(str(pack), 4, 512)
    with pytest.raises(VoxloopError, match="not found"):
        pack_turns(str(tmp_path / "none.npz"), 4, 1024)
    (tmp_path / "words.txt").write_text("not a pack")
    with pytest.raises(VoxloopError, match="not a packed dataset"):
        pack_turns(str(tmp_path / "words.txt"), 4, 1024)
    settings = AudioIntentsTrainSettings(data=str(pack))
    student, _ = load_student(folder)
    for wrong in ({"kernel": 4}, {"mask": 1.5}, {"threads": 0}, {"outside_per_question": -1},
                  {"more_per_phrasing": -1}):
        with pytest.raises(VoxloopError, match=next(iter(wrong)).replace("_", "-")):
            check_settings(student, dataclasses.replace(settings, **wrong))


def test_a_student_saved_with_its_head_loaded_keeps_the_head_out_of_its_weights(tmp_path):
    """The head sits beside the student, never among its modules: saving a loaded student
    and loading it again works, and its weights are the student's alone."""
    from voxloop.distill.student.model import save_student

    model, vocab = load_student("voxloop-student")
    assert model.audio_intents is not None
    assert not any(k.startswith("audio_intents") for k in model.state_dict())
    assert "audio_intents" not in dict(model.named_children())
    again, _ = load_student(save_student(model, vocab, tmp_path / "copy"))
    assert again.config == model.config


def student_folder_of(name: str):
    from voxloop.distill.student.model import student_folder

    return student_folder(name)


def test_the_more_phrasings_it_hears_are_none_a_pack_asks_and_some_are_kept_out():
    """The domain's more phrasings and templates (never the held-out phrasing), every
    intent's, a quarter of each kept out to measure."""
    from voxloop.distill.teachers.domain.data import ALL_FILLS, examples, load_domain
    from voxloop.distill.teachers.domain.text import normalize
    from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE

    asked = more_questions(0)
    heldout = {normalize(e.text) for e in examples(ALL_FILLS) if e.template == HELDOUT_TEMPLATE}
    assert not {normalize(text) for text, _, _ in asked} & heldout
    assert {split for _, _, split in asked} == {"train", "more_valid"}
    intents = {intent for _, intent, _ in asked}
    domain = load_domain()
    assert intents == {i["id"] for i in domain["intents"] + domain["compositional"]}
    for intent in intents:
        splits = [split for _, i, split in asked if i == intent]
        assert 0.15 < splits.count("more_valid") / len(splits) < 0.35
    assert any(intent == "add" and any(ch.isdigit() for ch in text)
               for text, intent, _ in asked)  # templates are filled


def test_questions_are_spoken_by_training_voices_and_heard_through_the_students_ears():
    model, vocab = load_student("voxloop-student")
    turns = spoken_turns(model, vocab, [("what is the capital of peru", "capital", "train"),
                                        ("hello there", "greeting", "more_valid")], 2, 0, "t")
    assert turns.intents.tolist() == ["capital"] * 2 + ["greeting"] * 2
    assert turns.splits.tolist() == ["train"] * 2 + ["more_valid"] * 2
    assert turns.codes.shape[0] == model.config.k_in
    assert len(turns.offsets) == 5 and all(np.diff(turns.offsets) > 10)  # 0.4 s or more
    assert turns.codes.min() >= 0 and turns.codes.max() < model.config.user_vocab
