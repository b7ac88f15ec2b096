"""The word pointer: aligned answer words in the layout, in generation, in training, and the
forced alignment that times them on real TTS speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import (
    ANSWERS,
    pointer_packed,
    tiny_config,
    tiny_examples,
    tiny_packed,
)
from voxloop.distill.student.align import WordAligner, align_pack, ordered_starts
from voxloop.distill.student.augment import jitter_words
from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.layout import IGNORE, build_sequence, text_token_ids
from voxloop.distill.student.model import Student, load_student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.rows import Phase, TurnProgress
from voxloop.distill.student.train import StudentTrainSettings, export_student, train
from voxloop.distill.student.vocab import EOT, Tokenizer, answer_words
from voxloop.errors import VoxloopError


def test_layout_tells_each_audio_step_its_word_and_when_the_next_starts():
    config = tiny_config(word_pointer=True)
    assert (config.channels, config.pointer_channel, config.word_frame_channel) == (10, 8, 9)
    user = np.zeros((8, 3), dtype=np.int64)
    text = np.array([5, 6, 7])
    answer = np.arange(4 * 6).reshape(4, 6) % 1024  # 6 frames: 9 delayed steps
    seq = build_sequence(config, user, text, answer, np.array([3]), np.array([0, 2, 4]))
    first_audio = 3 + len(text) + 1  # user frames, <sep> and words: <eot> predicts step 0
    pointer = seq.ids[first_audio:, config.pointer_channel] - config.text_offset
    assert pointer.tolist() == [5, 5, 6, 6, 7, 7, 7, 7, 7]
    assert seq.ids[first_audio:, config.word_frame_channel].tolist() == [0, 1, 0, 1, 0, 1, 2,
                                                                          3, 4]
    assert (seq.ids[:first_audio, config.pointer_channel:] == config.null_id).all()
    assert seq.boundary_target[first_audio:first_audio + 6].tolist() == [0, 1, 0, 1, 0, 0]
    assert (seq.boundary_target[:first_audio] == IGNORE).all()
    assert (seq.boundary_target[first_audio + 6:] == IGNORE).all()
    plain = build_sequence(tiny_config(), user, text, answer, np.array([3]))
    np.testing.assert_array_equal(seq.ids[:, :8], plain.ids)  # the rest is unchanged
    with pytest.raises(ValueError, match="distill align"):
        build_sequence(config, user, text, answer, np.array([3]))
    cut = build_sequence(config, user, text, answer, np.array([3]), words_only=True)
    whole = seq.words_only(len(text))  # no audio step, so no word times needed
    for name in ("ids", "text_target", "audio_target", "boundary_target", "ctc_target"):
        np.testing.assert_array_equal(getattr(cut, name), getattr(whole, name))
    assert len(cut.ids) == first_audio


def test_word_starts_stay_ordered_inside_the_answer_when_jittered():
    assert ordered_starts(np.array([3, 2, 2, 9, 40]), 12).tolist() == [0, 2, 3, 9, 11]
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames = jitter_words(np.array([0, 4, 5, 9, 15]), 17, 1, rng)
        assert frames[0] == 0 and (np.diff(frames) >= 1).all() and frames[-1] <= 16
        assert (np.abs(frames - [0, 4, 5, 9, 15]) <= 1).all()


def test_generation_moves_the_pointer_only_when_the_model_says_so():
    config = tiny_config(word_pointer=True)
    stepper = StudentStepper(Student(config), Tokenizer({"text": ["<unk>", "<sep>", "<eot>"]
                                                        + ["w"] * 5, "ctc": ["<blank>"]}))
    turn = TurnProgress(phase=Phase.TEXT, text=[5, 6, 7])
    stepper._text_step(turn, torch.nn.functional.one_hot(torch.tensor(EOT), 8).float(), None)
    assert turn.phase is Phase.AUDIO
    assert turn.pending[0] == text_token_ids(config, np.array([EOT]))[0, 0]
    def said() -> tuple[int, int]:
        return (turn.pending[config.pointer_channel] - config.text_offset,
                turn.pending[config.word_frame_channel])

    heard = [said()]
    logits = torch.zeros(config.k_out, 1025)
    for word_ends in (0.0, 1.0, 0.3, 0.3, 1.0, 1.0):  # 0.3 twice: ended by now with 0.51
        stepper._audio_step(turn, logits, word_ends, None)
        heard.append(said())
    assert heard == [(5, 0), (5, 1), (6, 0), (6, 1), (7, 0), (7, 1), (7, 2)]  # not past the end
    assert turn.eos_step is None


def test_an_answer_does_not_end_before_its_last_word():
    config = tiny_config(word_pointer=True)
    stepper = StudentStepper(Student(config), Tokenizer({"text": ["<unk>", "<sep>", "<eot>"]
                                                        + ["w"] * 5, "ctc": ["<blank>"]}))
    turn = TurnProgress(phase=Phase.AUDIO, text=[5, 6])
    stop = torch.zeros(config.k_out, 1025)
    stop[0, 1024] = 1.0  # codebook 0 says: end of the answer
    stepper._audio_step(turn, stop, 0.0, None)
    assert turn.eos_step is None and turn.word == 1 and turn.steps[0][0] != 1024
    stepper._audio_step(turn, stop, 0.0, None)  # at the last word it may end
    assert turn.eos_step == 1


@pytest.fixture(scope="module")
def aligner() -> WordAligner:
    return WordAligner()


@pytest.mark.slow
def test_alignment_follows_the_words_in_real_speech(aligner):
    from voxloop.audio import resample
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize("The capital of France is Paris.", "piper:joe")
    speech = resample(samples, rate_hz, 16000)
    words = answer_words("The capital of France is Paris.")
    starts = aligner.word_starts_s(speech, words)
    late = aligner.word_starts_s(np.concatenate([np.zeros(8000, np.float32), speech]), words)
    print(f"\nword starts (s): {np.round(starts, 2)}, after 0.5 s of silence {np.round(late, 2)}")
    assert len(starts) == len(words) and (np.diff(starts) > 0).all()
    assert starts[-1] < len(speech) / 16000 - 0.2  # "Paris" starts before the end
    np.testing.assert_allclose(late[1:] - starts[1:], 0.5, atol=0.1)  # the words moved with it


@pytest.mark.slow
def test_align_pack_times_every_answer_word(tmp_path):
    examples = tiny_examples(4) + tiny_examples(2, seed=1, split="valid")
    data = tiny_packed(examples)
    data.save(tmp_path / "pack.npz")
    with pytest.raises(VoxloopError, match="answer cache"):
        align_pack(tmp_path / "pack.npz", tmp_path / "nothing", progress=False)
    (tmp_path / "dataset" / "answers").mkdir(parents=True)  # empty: answers synthesized
    done = align_pack(tmp_path / "pack.npz", tmp_path / "dataset", progress=False)
    assert done["answers"] == len(ANSWERS)
    aligned = type(data).load(tmp_path / "pack.npz")
    for i in range(len(aligned)):
        frames = aligned.words(i)
        assert len(frames) == len(aligned.text(i)) and frames[0] == 0
        # the fixture's answers are 5-8 frames, the spoken ones longer: clipped to the end
        assert (np.diff(frames) >= 0).all() and frames[-1] < aligned.answer(i).shape[1]


def _settings(tmp_path, **changes) -> StudentTrainSettings:
    values = dict(data="unused.npz", out=str(tmp_path / "run"), steps=6, batch_size=4, lr=3e-3,
                  warmup_steps=2, eval_every=3, ckpt_every=3, threads=1, device="cpu")
    values.update(changes)
    return StudentTrainSettings(**values)


def test_fine_tune_adds_the_word_pointer_and_needs_word_times(tmp_path):
    data = pointer_packed()
    first = train(_settings(tmp_path / "a"), tiny_config(), data=data)
    folder = export_student(first / "best.pt", tmp_path / "student")
    start, _ = load_student(folder)
    tuned = train(_settings(tmp_path / "b", steps=1, lr=1e-12, warmup_steps=1,
                            init_from=str(folder)), tiny_config(word_pointer=True), data=data)
    state = torch.load(tuned / "checkpoint.pt", weights_only=False)
    assert state["config"]["word_pointer"]
    for name, value in start.state_dict().items():
        torch.testing.assert_close(state["model"][name], value, atol=1e-6, rtol=0), name
    assert "boundary_head.weight" in state["model"]
    assert state["model"]["word_frame_embed.weight"].abs().max() < 1e-9  # starts silent
    data.word_frames = None
    with pytest.raises(VoxloopError, match="distill align"):
        train(_settings(tmp_path / "c", init_from=str(folder)), tiny_config(word_pointer=True),
              data=data)


@pytest.mark.slow
def test_tiny_pointer_student_overfits_and_generation_follows_its_words(tmp_path):
    data = pointer_packed()
    settings = _settings(tmp_path, steps=150, lr=4e-3, warmup_steps=20, weight_decay=0.0,
                         augment=False, eval_every=1000, ckpt_every=1000)
    out = train(settings, tiny_config(d_model=96, word_pointer=True), data=data)
    model, vocab = load_student(export_student(out / "best.pt", tmp_path / "student"))
    assert model.config.word_pointer
    for i in data.indices("train"):
        result = generate(model, Tokenizer(vocab), data.user(i), SamplingOptions(),
                          chunk_frames=2)
        assert result.text_ids == data.text(i).tolist(), (i, result.text)
        assert np.array_equal(result.codes, data.answer(i)[:4]), i


def test_answer_code_noise_replaces_only_fed_back_codes():
    from voxloop.distill.student.augment import noisy_answer_inputs

    config = tiny_config(word_pointer=True)
    user, text = np.zeros((8, 3), dtype=np.int64), np.array([5, 6, 7])
    answer = np.arange(4 * 40).reshape(4, 40) % 1024
    seq = build_sequence(config, user, text, answer, np.array([3]), np.array([0, 12, 25]))
    ids = seq.ids.copy()
    first_audio = 3 + len(text) + 1
    noisy_answer_inputs(config, ids, first_audio, 0.3, np.random.default_rng(0))
    changed = ids != seq.ids
    assert not changed[:first_audio + 1].any()  # the question, the words, <eot>
    assert not changed[:, config.k_out:].any()  # the pointer channels
    share = changed[first_audio + 1:, :config.k_out].mean()
    assert 0.2 < share < 0.4, share
    codes = ids[first_audio + 1:, :4] - config.audio_offset - 1025 * np.arange(4)
    special = seq.ids[first_audio + 1:, :4] - config.audio_offset - 1025 * np.arange(4) == 1024
    assert (codes[special] == 1024).all() and (codes[~special] < 1024).all()  # still codes
