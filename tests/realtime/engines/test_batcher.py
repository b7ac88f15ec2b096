"""Continuous batching: many sessions' rows in one model thread, each as if alone."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_config
from tests.realtime.engines.helpers import collect
from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.model import Student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.vocab import Tokenizer
from voxloop.errors import VoxloopError
from voxloop.realtime.engines.answers import Frame, Reason, Word
from voxloop.realtime.engines.batcher import ContinuousBatcher

OPTIONS = SamplingOptions(max_text_tokens=5, max_audio_frames=10)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = tiny_config(text_vocab=12, ctc_vocab=9, k_in=4, k_out=4)
    return Student(config).eval()


@pytest.fixture()
def batcher(model):
    vocab = {"text": ["<unk>", "<sep>", "<eot>"] + [f"w{i}" for i in range(9)],
             "ctc": ["<blank>", "<unk>"] + [f"c{i}" for i in range(7)]}
    b = ContinuousBatcher(StudentStepper(model, Tokenizer(vocab), OPTIONS), slots=4,
                          max_prefill_frames=3)
    yield b
    b.shutdown()


def user_codes(seed: int, frames: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1024, (4, frames))


def reference(model, batcher, codes: np.ndarray) -> tuple[list[str], np.ndarray]:
    alone = generate(model, batcher.stepper.tokenizer, codes, OPTIONS)
    return alone.text_ids, alone.codes


def assert_same(model, batcher, codes, got) -> None:
    text_ids, frames = reference(model, batcher, codes)
    vocab = batcher.stepper.tokenizer.vocab["text"]
    assert got[0] == [vocab[i] for i in text_ids]
    np.testing.assert_array_equal(got[1], frames)


def test_sessions_batched_together_answer_as_if_alone(model, batcher):
    codes = [user_codes(s, n) for s, n in ((1, 9), (2, 14), (3, 5))]
    slots = [batcher.open() for _ in codes]
    for start in range(0, 14, 2):  # interleaved chunks of different sizes, as live sessions
        for slot, c in zip(slots, codes, strict=True):
            slot.listen(c[:, start:start + 2])
    answers = [slot.answer() for slot in slots]
    results = [collect(a) for a in answers]
    for c, got in zip(codes, results, strict=True):
        assert got[2] is Reason.COMPLETED
        assert_same(model, batcher, c, got)
    stats = batcher.stats()
    assert stats.rows_per_call > 1.5, stats  # the sessions really shared model calls


def test_an_answer_says_how_sure_its_words_are_before_its_first_frame(model, batcher):
    codes = user_codes(4, 8)
    slot = batcher.open()
    slot.listen(codes)
    answer = slot.answer()
    first = answer.get(10.0)
    while not isinstance(first, Frame):  # the words come first
        assert answer.words_logprob is None or isinstance(first, Word)
        first = answer.get(10.0)
    alone = generate(model, batcher.stepper.tokenizer, codes, OPTIONS)
    assert answer.words_logprob == pytest.approx(alone.text_logprob, abs=1e-5)
    assert alone.text_logprob < 0


def test_rollback_is_as_if_the_answer_never_started(model, batcher):
    first, rest = user_codes(4, 7), user_codes(5, 6)
    slot = batcher.open()
    slot.listen(first)
    tentative = slot.answer()  # a pause: the answer starts
    assert tentative.get(10.0) is not None  # it has begun writing
    slot.rollback(tentative)  # the user went on speaking
    slot.listen(rest)
    final = collect(slot.answer())
    assert_same(model, batcher, np.concatenate([first, rest], 1), final)
    assert collect(tentative)[2] is Reason.ROLLED_BACK


def test_new_turn_forgets_the_last_one_and_stop_ends_an_answer(model, batcher):
    slot = batcher.open()
    slot.listen(user_codes(6, 8))
    answer = slot.answer()
    slot.stop(answer)
    assert collect(answer)[2] in (Reason.STOPPED, Reason.COMPLETED)
    slot.new_turn()
    codes = user_codes(7, 10)
    slot.listen(codes)
    assert_same(model, batcher, codes, collect(slot.answer()))


def test_empty_turn_and_full_slots(batcher):
    slot = batcher.open()
    assert collect(slot.answer())[2] is Reason.EMPTY
    for _ in range(3):
        batcher.open()
    with pytest.raises(VoxloopError, match="slots are in use"):
        batcher.open()
    slot.close()
    batcher.open()  # a closed slot is free again


def test_a_turn_longer_than_the_cache_keeps_its_end(model, batcher):
    slot = batcher.open()
    long = user_codes(8, batcher.max_user_frames + 30)
    slot.listen(long)
    words, frames, reason = collect(slot.answer())
    assert reason is Reason.COMPLETED and frames.shape[1] > 0
    # a tentative tail that does not fit: the turn starts over from the last half of what
    # was heard, then hears the tail (its end: what the answer is about) whole
    half = batcher.max_user_frames // 2
    heard, tail = user_codes(9, batcher.max_user_frames - 2), user_codes(10, 6)
    slot.new_turn()
    slot.listen(heard)
    answer = slot.answer(lambda: tail)
    assert_same(model, batcher, np.concatenate([heard[:, -half:], tail], 1), collect(answer))
    assert len(answer.heard) == half + 6


def test_a_closed_handle_cannot_disturb_other_sessions(model, batcher):
    slot, stale = batcher.open(), batcher.open()
    codes = user_codes(9, 6)
    slot.listen(codes)
    answer = slot.answer()
    stale.close()
    stale.listen(user_codes(10, 4))  # late commands for a closed slot are dropped,
    stale.rollback(answer)  # not a failed model thread for everyone
    assert_same(model, batcher, codes, collect(answer))


def test_a_student_with_a_mouth_speaks_through_the_batcher_without_model_calls():
    torch.manual_seed(0)
    config = tiny_config(text_vocab=12, ctc_vocab=9, k_in=4, k_out=4, mouth_d_model=32)
    model = Student(config).eval()
    model.mouth.set_spelling([f"w{i}" for i in range(12)])
    with torch.no_grad():  # every step writes word 0: five words (max_text_tokens), then said
        model.text_head.weight.zero_()
    vocab = {"text": ["<unk>", "<sep>", "<eot>"] + [f"w{i}" for i in range(9)],
             "ctc": ["<blank>", "<unk>"] + [f"c{i}" for i in range(7)]}
    batcher = ContinuousBatcher(StudentStepper(model, Tokenizer(vocab), OPTIONS), slots=2,
                                max_prefill_frames=3)
    passes = []
    call = batcher._call
    batcher._call = lambda: passes.append(1) or call()
    try:
        codes = user_codes(6, 6)
        slot = batcher.open()
        slot.listen(codes)
        got = collect(slot.answer())
        assert got[2] is Reason.COMPLETED and got[1].shape[1] >= 5  # a frame a word at least
        assert_same(model, batcher, codes, got)
        # two prefill calls and six word steps ran the model; handing out the frames did not
        assert batcher.stats().calls <= 8, batcher.stats()
        # nor did they take passes of the model thread's loop: all went out with the last
        # word, so the first audio never waits for a call that serves other sessions
        assert len(passes) == batcher.stats().calls, (len(passes), batcher.stats())
    finally:
        batcher.shutdown()


def test_a_vote_says_the_wording_most_rows_wrote_and_only_its_mouth_runs():
    """Three rows hear one turn (two the same codes, one others): the majority's wording is
    said as its row alone would say it; the other row ends after its words, unsaid."""
    from voxloop.realtime.engines.answers import VotedAnswer

    torch.manual_seed(3)
    config = tiny_config(text_vocab=12, ctc_vocab=9, k_in=4, k_out=4, mouth_d_model=32)
    model = Student(config).eval()
    model.mouth.set_spelling([f"w{i}" for i in range(12)])
    vocab = {"text": ["<unk>", "<sep>", "<eot>"] + [f"w{i}" for i in range(9)],
             "ctc": ["<blank>", "<unk>"] + [f"c{i}" for i in range(7)]}
    batcher = ContinuousBatcher(StudentStepper(model, Tokenizer(vocab), OPTIONS), slots=3,
                                max_prefill_frames=3)
    said = []
    say = model.mouth.say
    model.mouth.say = lambda text: said.append(text) or say(text)
    try:
        heard, other = user_codes(11, 7), user_codes(12, 9)
        majority, minority = reference(model, batcher, heard), reference(model, batcher, other)
        assert majority[0] != minority[0] and said  # the two wordings differ
        said.clear()
        slots = [batcher.open() for _ in range(3)]
        for slot, codes in zip(slots, (other, heard, heard), strict=True):
            slot.listen(codes)
        loser, won, tied = (collect(answer) for answer in batcher.answer(slots, [None] * 3))
        assert won[2] is Reason.COMPLETED and len(said) == 1  # one mouth ran: the winner's
        assert_same(model, batcher, heard, won)
        assert loser[0] == [vocab["text"][i] for i in minority[0]]
        assert loser[1].shape[1] == 0 and loser[2] is Reason.STOPPED  # its words, unsaid
        assert tied[0] == won[0] and tied[1].shape[1] == 0  # a tie: the earlier row speaks
        for slot, codes in zip(slots, (heard, other, heard), strict=True):
            slot.new_turn()
            slot.listen(codes)
        answers = batcher.answer(slots, [None] * 3)
        voted = VotedAnswer(answers, lambda i: None)
        assert_same(model, batcher, heard, collect(voted))  # as a session reads it
        assert voted.winner == 0
        more = user_codes(13, 4)  # the turn goes on: every row rolls back and hears on
        for slot, answer in zip(slots, answers, strict=True):
            slot.rollback(answer)
            slot.listen(more)
        assert_same(model, batcher, np.concatenate([other, more], 1), collect(slots[1].answer()))
    finally:
        batcher.shutdown()


def test_a_tail_flushes_as_soon_as_its_answer_is_asked_for(model, batcher):
    """While the model thread waits for one session's partial block, another session's
    starts flushing on the tail threads, not after it; both answers are as if alone."""
    gate, started = threading.Event(), threading.Event()

    def slow_tail():
        gate.wait(10.0)
        return user_codes(8, 2)

    def quick_tail():
        started.set()
        return user_codes(9, 2)

    first, second = batcher.open(), batcher.open()
    first.listen(user_codes(6, 5))
    second.listen(user_codes(7, 5))
    slow, quick = first.answer(slow_tail), second.answer(quick_tail)
    try:
        assert started.wait(5.0)  # the model thread is still in slow_tail's answer
    finally:
        gate.set()
    assert_same(model, batcher, np.concatenate([user_codes(6, 5), user_codes(8, 2)], 1),
                collect(slow))
    assert_same(model, batcher, np.concatenate([user_codes(7, 5), user_codes(9, 2)], 1),
                collect(quick))


def test_a_tail_is_heard_in_the_first_text_call(model, batcher):
    """A tentative answer's tail goes into the model with <sep>: the same answer and the
    same heard frames as when the whole turn was listened to, in one model call fewer."""
    calls = []
    advance = batcher.stepper.advance
    batcher.stepper.advance = lambda state, chunks=None: calls.append(1) or advance(state, chunks)
    codes = user_codes(10, 8)  # 3 + 3 + 2 frames a prefill call (max_prefill_frames 3)

    def answered(tail: bool) -> tuple:
        slot = batcher.open()
        try:
            slot.listen(codes[:, :6] if tail else codes)
            answer = slot.answer((lambda: codes[:, 6:]) if tail else None)
            got, heard = collect(answer), list(answer.heard)
            return got, heard, len(calls)
        finally:
            slot.close()
            calls.clear()

    (whole, heard_whole, calls_whole), (tailed, heard_tailed, calls_tailed) = \
        answered(False), answered(True)
    assert_same(model, batcher, codes, whole)
    assert_same(model, batcher, codes, tailed)
    assert len(heard_tailed) == len(heard_whole) == 8 and heard_tailed == heard_whole
    assert calls_tailed == calls_whole - 1, (calls_tailed, calls_whole)


def test_other_sessions_are_answered_while_a_tail_still_flushes(model, batcher):
    """The model thread does not wait for one answer's tail: a second session's answer is
    written whole while the first's partial block is still flushing; the first is then
    answered as if alone."""
    gate = threading.Event()

    def slow_tail():
        gate.wait(30.0)
        return user_codes(15, 2)

    first, second = batcher.open(), batcher.open()
    first.listen(user_codes(13, 5))
    waiting = first.answer(slow_tail)
    try:
        second.listen(user_codes(14, 6))
        assert_same(model, batcher, user_codes(14, 6), collect(second.answer()))
        assert waiting.get(0.0) is None  # nothing of the first yet: its tail is not in
    finally:
        gate.set()
    assert_same(model, batcher, np.concatenate([user_codes(13, 5), user_codes(15, 2)], 1),
                collect(waiting))


def failure_of(answer) -> str:
    """The error an answer ended with (it must end failed)."""
    from voxloop.realtime.engines.answers import Failed

    while True:
        item = answer.get(10.0)
        assert item is not None, "the model thread stopped answering"
        if isinstance(item, Failed):
            return item.error
        assert not isinstance(item, Frame) or item.codes is not None


def fail_next_call(batcher) -> threading.Event:
    """The batcher's next model call raises (once); the event is set when it has."""
    advance, broke = batcher.stepper.advance, threading.Event()

    def fails_once(state, chunks=None):
        if not broke.is_set():
            broke.set()
            raise RuntimeError("out of memory")
        return advance(state, chunks)

    batcher.stepper.advance = fails_once
    return broke


def test_a_failed_tail_fails_its_own_answer_only(model, batcher):
    def broken_tail():
        raise RuntimeError("no partial block")

    first, second = batcher.open(), batcher.open()
    first.listen(user_codes(16, 5))
    second.listen(user_codes(17, 5))
    failed, fine = first.answer(broken_tail), second.answer()
    assert "no partial block" in failure_of(failed)
    assert_same(model, batcher, user_codes(17, 5), collect(fine))  # untouched by it


def test_a_turn_heard_across_a_failed_model_call_is_not_answered_as_a_fragment(model, batcher):
    """A failed call resets every row: a session in the middle of its turn loses what it
    heard, so its answer fails (say it again) rather than answering the rest alone; its
    next turn is answered as usual."""
    listening, other = batcher.open(), batcher.open()
    listening.listen(user_codes(18, 2))
    collect(other.answer())  # (an empty turn) the first row's frames are in now
    broke = fail_next_call(batcher)
    other.new_turn()
    other.listen(user_codes(19, 3))  # its prefill call fails: every row starts over
    assert broke.wait(10.0)
    listening.listen(user_codes(20, 3))
    assert "say it again" in failure_of(listening.answer())
    listening.new_turn()
    listening.listen(user_codes(21, 4))
    assert_same(model, batcher, user_codes(21, 4), collect(listening.answer()))


def wait_prefilled(batcher, slot) -> None:
    """Until the model thread has prefilled every frame ``slot`` was given."""
    deadline = time.monotonic() + 10
    while (row := batcher._rows[slot.index]) is None or row.queued or not row.stream.length:
        assert time.monotonic() < deadline, "the frames were never prefilled"
        time.sleep(0.005)


@pytest.mark.parametrize("tail", ["empty", "broken"])
def test_a_tail_alone_in_a_call_that_comes_to_nothing_leaves_other_turns_be(model, batcher,
                                                                             tail):
    """A tentative answer to a sound shorter than a block: its tail flushes to no frame
    (or fails), and no other row has work in that call; the other session's turn, heard
    before, is answered as usual (the call had no rows to run: nothing failed)."""
    def no_frame():
        return np.zeros((4, 0), np.int64)

    def broken():
        raise RuntimeError("no partial block")

    other, short = batcher.open(), batcher.open()
    other.listen(user_codes(24, 6))
    wait_prefilled(batcher, other)
    answer = short.answer(no_frame if tail == "empty" else broken)
    if tail == "empty":
        words, codes, reason = collect(answer)
        assert (words, codes.shape[1], reason) == ([], 0, Reason.EMPTY)
    else:
        assert "no partial block" in failure_of(answer)
    assert_same(model, batcher, user_codes(24, 6), collect(other.answer()))


def test_a_tentative_answer_failed_mid_turn_leaves_the_turn_lost_too(model, batcher):
    """The call that fails is a tentative answer's (begun at a pause); the user goes on:
    the turn's start is gone with the reset rows, so its answer fails too."""
    slot = batcher.open()
    slot.listen(user_codes(22, 3))
    wait_prefilled(batcher, slot)  # the next call answers
    fail_next_call(batcher)
    tentative = slot.answer()
    assert "out of memory" in failure_of(tentative)
    slot.rollback(tentative)  # the user went on after the pause
    slot.listen(user_codes(23, 2))
    assert "say it again" in failure_of(slot.answer())
