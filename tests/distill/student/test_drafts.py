"""Drafted answer words: fewer model calls, the same answer as one word per call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_config
from tests.realtime.engines.helpers import collect
from voxloop.distill.student.drafts import AnswerDrafts
from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.model import Student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.rows import Phase
from voxloop.distill.student.vocab import Tokenizer
from voxloop.realtime.engines.batcher import ContinuousBatcher

OPTIONS = SamplingOptions(max_text_tokens=6, max_audio_frames=8)
ONE_WORD = SamplingOptions(max_text_tokens=6, max_audio_frames=8, draft_words=0)
VOCAB = {"text": ["<unk>", "<sep>", "<eot>"] + [f"w{i}" for i in range(9)],
         "ctc": ["<blank>", "<unk>"] + [f"c{i}" for i in range(7)]}


def test_a_draft_follows_the_answers_most_known_answers_go_on_with():
    drafts = AnswerDrafts([[5, 6, 7], [5, 6, 8], [5, 6, 8, 9], [4]])
    assert drafts.draft([]) == [5, 6, 8, 9]  # 3 of 4 answers start with 5; 2 of 3 go on 6, 8
    assert drafts.draft([5, 6, 7]) == []  # a whole known answer: nothing after it
    assert drafts.draft([5, 6], limit=1) == [8]
    assert drafts.draft([3]) == []  # no known answer begins so
    assert AnswerDrafts([[2, 1], [2, 3]]).draft([2]) == [1]  # a tie: the smaller id


@pytest.fixture(scope="module")
def model() -> Student:
    torch.manual_seed(0)
    return Student(tiny_config(text_vocab=12, ctc_vocab=9, k_in=4, k_out=4)).eval()


def codes_of(seed: int, frames: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (4, frames))


def answer_counting_calls(stepper: StudentStepper, codes: np.ndarray
                          ) -> tuple[list[int], np.ndarray, int, float]:
    """(word ids, frames [K_out, F], model calls while writing words, the words'
    log-probability) of one row."""
    state = stepper.start(1)
    stepper.advance(state, [codes])
    stepper.end_turn(state)
    frames, word_calls = [], 0
    while not state.done:
        word_calls += state.rows[0].phase is Phase.TEXT
        out = stepper.step(state)
        if out.frames[0] is not None:
            frames.append(out.frames[0])
    turn = state.rows[0].turn
    return turn.text, np.stack(frames, 1), word_calls, turn.text_logprob


@pytest.mark.parametrize("seed", [2, 5, 7])
def test_drafted_or_not_the_answer_is_the_same(model, seed):
    codes = codes_of(seed, 9)
    plain = generate(model, Tokenizer(VOCAB), codes, ONE_WORD)
    words = plain.text_ids
    assert len(words) >= 3  # (the tiny model writes a few words for these codes)
    other = [w for w in range(3, 12) if w != words[2]][0]
    cases = {"the answer itself": [words], "wrong from the start": [[w % 9 + 3 for w in words]],
             "wrong from its third word": [words[:2] + [other, other]], "none": []}
    for name, known in cases.items():
        stepper = StudentStepper(model, Tokenizer(VOCAB), OPTIONS)
        stepper.drafts = AnswerDrafts(known)
        text, frames, calls, logprob = answer_counting_calls(stepper, codes)
        assert text == words, name
        assert logprob == pytest.approx(plain.text_logprob, abs=1e-5), name
        np.testing.assert_array_equal(frames, plain.codes, err_msg=name)
        if name == "the answer itself":  # every word checked in one call, <eot> included
            assert calls == 1
        if name == "wrong from its third word":
            assert calls < len(words) + 1


def test_batched_rows_with_drafts_answer_as_alone(model):
    """A row that drafts beside rows that listen or draft otherwise, in one batcher."""
    codes = [codes_of(s, n) for s, n in ((1, 9), (2, 12), (3, 6))]
    known = [generate(model, Tokenizer(VOCAB), codes[0], ONE_WORD).text_ids]
    batcher = ContinuousBatcher(StudentStepper(model, Tokenizer(VOCAB), OPTIONS), slots=3,
                                max_prefill_frames=3)
    batcher.stepper.drafts = AnswerDrafts(known)
    try:
        slots = [batcher.open() for _ in codes]
        for slot, c in zip(slots, codes, strict=True):
            slot.listen(c)
        results = [collect(slot.answer()) for slot in slots]
    finally:
        batcher.shutdown()
    for c, (words, frames, _) in zip(codes, results, strict=True):
        alone = generate(model, Tokenizer(VOCAB), c, ONE_WORD)
        assert words == [VOCAB["text"][i] for i in alone.text_ids]
        np.testing.assert_array_equal(frames, alone.codes)


@pytest.mark.slow  # the bundled student and its semantic tokenizer, a question spoken by TTS
def test_the_bundled_student_writes_a_known_answer_in_fewer_calls():
    from voxloop.audio import MODEL_RATE_HZ, resample
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.user_tokens import as_frames, load_student_semantic
    from voxloop.distill.teachers.tts import synthesize

    model, vocab = load_student("voxloop-student")
    assert len(AnswerDrafts.from_mouth(model.mouth)) > 1000  # the answers its mouth learned
    samples, rate_hz = synthesize("What is the capital of France?", "festival:slt-hts")
    wav = torch.from_numpy(resample(samples, rate_hz, MODEL_RATE_HZ).astype(np.float32))[None]
    codes = as_frames(load_student_semantic(None, vocab, model).encode(wav).numpy())
    drafted = answer_counting_calls(StudentStepper(model, Tokenizer(vocab)), codes)
    plain = answer_counting_calls(
        StudentStepper(model, Tokenizer(vocab), SamplingOptions(draft_words=0)), codes)
    assert Tokenizer(vocab).decode_answer(plain[0]).lower() == "the capital of france is paris."
    assert drafted[0] == plain[0]
    np.testing.assert_array_equal(drafted[1], plain[1])
    assert drafted[2] <= plain[2] // 2, (drafted[2], plain[2])
