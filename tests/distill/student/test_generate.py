"""The stepper's row streams: mark / rollback, reset and stop move a row as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_config
from voxloop.distill.student.generate import GenerationState, SamplingOptions, StudentStepper
from voxloop.distill.student.layout import text_token_ids, user_frame_ids
from voxloop.distill.student.model import Student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.rows import Phase
from voxloop.distill.student.vocab import EOT, SEP, Tokenizer

OPTIONS = SamplingOptions(max_text_tokens=5, max_audio_frames=10)


@pytest.fixture(scope="module")
def stepper() -> StudentStepper:
    torch.manual_seed(0)
    model = Student(tiny_config(text_vocab=12, ctc_vocab=9, k_in=4, k_out=4)).eval()
    vocab = {"text": ["<unk>", "<sep>", "<eot>"] + [f"w{i}" for i in range(9)],
             "ctc": ["<blank>", "<unk>"] + [f"c{i}" for i in range(7)]}
    return StudentStepper(model, Tokenizer(vocab), OPTIONS)


def user_codes(seed: int, frames: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (4, frames))


def answer(stepper: StudentStepper, state: GenerationState) -> tuple[list[int], np.ndarray]:
    """End the turn of a one-row ``state`` and step it to the end: (word ids, codes [K_out, F])."""
    stepper.end_turn(state)
    frames = []
    while not state.done:
        out = stepper.step(state)
        if out.frames[0] is not None:
            frames.append(out.frames[0])
    return state.rows[0].turn.text, np.stack(frames, 1)


def assert_as_generate(stepper, state, codes: np.ndarray) -> None:
    alone = generate(stepper.model, stepper.tokenizer, codes, OPTIONS)
    text, frames = answer(stepper, state)
    assert text == alone.text_ids
    np.testing.assert_array_equal(frames, alone.codes)


@pytest.mark.parametrize("seed", [1, 3, 8])
def test_the_words_log_probability_is_the_text_heads_own(stepper, seed):
    """What the stepper adds up as it writes equals one causal pass over the question, <sep>
    and the words, read at each chosen word and the end (when it chose to end)."""
    model, config, codes = stepper.model, stepper.model.config, user_codes(seed, 7)
    alone = generate(model, stepper.tokenizer, codes, OPTIONS)
    ended = len(alone.text_ids) < OPTIONS.max_text_tokens
    chosen = [*alone.text_ids, *([EOT] if ended else [])]
    ids = np.concatenate([user_frame_ids(config, codes),
                          text_token_ids(config, np.array([SEP, *alone.text_ids]))])
    with torch.no_grad():
        logits = model(torch.from_numpy(ids)[None], heads=("text",)).text[0].float()
    logprobs = torch.log_softmax(logits, -1)[codes.shape[1]:]  # from <sep> on
    expected = sum(float(logprobs[j, w]) for j, w in enumerate(chosen))
    assert alone.text_logprob == pytest.approx(expected, abs=1e-4)
    assert alone.text_logprob < 0


@pytest.mark.parametrize("chunk_frames", [0, 3])
def test_what_it_heard_is_the_ctc_heads_greedy_read_of_the_question(stepper, chunk_frames):
    """``generate`` reads the CTC head as it prefills (what the engine reports as the
    user's words): one causal pass over the question, greedy, in chunks or at once."""
    model, config, codes = stepper.model, stepper.model.config, user_codes(4, 9)
    alone = generate(model, stepper.tokenizer, codes, OPTIONS, chunk_frames)
    with torch.no_grad():
        ctc = model(torch.from_numpy(user_frame_ids(config, codes))[None], heads=("ctc",)).ctc
    assert alone.heard == stepper.tokenizer.decode_ctc(ctc[0].argmax(-1).tolist())
    assert alone.heard  # a random model hears something
    assert_as_generate(stepper, _prefilled(stepper, codes), codes)  # the answer is the same


def test_a_turn_of_no_frame_is_answered_with_nothing(stepper):
    """As the engine ends it (Reason.EMPTY): no words out of nothing."""
    alone = generate(stepper.model, stepper.tokenizer, user_codes(0, 0), OPTIONS)
    assert (alone.text_ids, alone.codes.shape, alone.n_steps) == ([], (4, 0), 0)


def _prefilled(stepper: StudentStepper, codes: np.ndarray) -> GenerationState:
    state = stepper.start(1)
    stepper.advance(state, [codes])
    return state


def test_rollback_returns_to_the_mark_as_if_the_answer_never_started(stepper):
    first, rest = user_codes(1, 7), user_codes(2, 5)
    state = stepper.start(1)
    stream = state.rows[0]
    stepper.advance(state, [first])
    heard = list(stream.heard)
    assert len(heard) == 7 and stream.length == 7
    stream.mark()
    stepper.end_turn(state)
    for _ in range(4):  # a tentative answer: words and audio steps
        stepper.step(state)
    assert stream.length == 11 and stream.phase is not Phase.LISTEN
    stream.rollback()
    assert stream.length == 7 and stream.phase is Phase.LISTEN and stream.heard == heard
    stepper.advance(state, [rest])
    assert len(stream.heard) == 12
    assert_as_generate(stepper, state, np.concatenate([first, rest], 1))


def test_reset_forgets_the_turn_and_leaves_other_rows_alone(stepper):
    state = stepper.start(2)
    stepper.advance(state, [user_codes(3, 6), user_codes(4, 9)])
    stepper.end_turn(state, rows=[0])
    stepper.advance(state)  # row 0 answers, row 1 idles
    assert [r.length for r in state.rows] == [7, 9]
    state.rows[0].reset()
    assert state.rows[0].length == 0 and state.rows[0].phase is Phase.LISTEN
    assert state.rows[0].heard == [] and state.rows[1].length == 9
    codes = user_codes(5, 8)
    one = state.select([0])
    stepper.advance(one, [codes])
    assert state.rows[1].length == 9  # a selected batch writes only its own rows
    assert_as_generate(stepper, one, codes)


def test_stop_ends_the_answer_and_the_row_idles(stepper):
    state = stepper.start(1)
    stepper.advance(state, [user_codes(6, 5)])
    stepper.end_turn(state)
    stepper.step(state)
    state.rows[0].stop()
    assert state.done and state.rows[0].phase is Phase.DONE
    length = state.rows[0].length
    out = stepper.advance(state)
    assert out.text == [[]] and out.frames == [None] and state.rows[0].length == length
