"""Votes: a turn heard on several alignments of the ear's frames, the wording most of the
answers wrote said (`--native-votes`)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.realtime.engines.helpers import collect
from voxloop.realtime.engines.answers import Answer, Done, Frame, Reason, VotedAnswer, Word


def _answer(words: list[str], frames: int = 2, reason: Reason = Reason.COMPLETED) -> Answer:
    answer = Answer()
    for word in words:
        answer.items.put(Word(word))
    for i in range(frames):
        answer.items.put(Frame(np.full(4, i)))
    answer.items.put(Done(reason))
    return answer


def _vote(*answers: Answer) -> tuple[VotedAnswer, list[int]]:
    stopped: list[int] = []
    return VotedAnswer(list(answers), stopped.append), stopped


def test_the_wording_most_answers_wrote_is_said_and_the_others_are_stopped():
    voted, stopped = _vote(_answer(["one", "times", "eight"]), _answer(["nine", "times", "eight"]),
                           _answer(["nine", "times", "eight"], frames=3))
    words, codes, reason = collect(voted)
    assert words == ["nine", "times", "eight"] and voted.winner == 1
    assert codes.shape == (4, 2) and reason is Reason.COMPLETED  # the winner's own frames
    assert stopped == [0, 2]
    assert voted.wordings == ["one times eight", "nine times eight", "nine times eight"]


def test_a_tie_goes_to_the_unshifted_ear_and_silent_answers_do_not_vote():
    voted, _ = _vote(_answer(["a"]), _answer(["b"]), _answer(["c"]))
    assert collect(voted)[0] == ["a"]
    empty = _answer([], frames=0, reason=Reason.EMPTY)
    voted, stopped = _vote(empty, _answer(["b"]), _answer(["c"]), _answer(["c"]))
    assert collect(voted)[0] == ["c"] and voted.winner == 2 and stopped == [0, 1, 3]


def test_nothing_is_read_until_every_answer_has_its_words():
    late = Answer()
    voted, stopped = _vote(_answer(["x"]), late)
    assert voted.get(0.01) is None and voted.winner is None and stopped == []
    late.items.put(Word("x"))
    assert voted.get(0.01) is None  # still writing words
    late.items.put(Frame(np.zeros(4)))
    assert voted.get(0.01) == Word("x") and voted.winner == 0 and stopped == [1]


def test_a_shifted_ear_hears_the_turn_from_a_few_ms_in():
    from voxloop.realtime.engines.ears import ShiftedEar

    class Recorder:
        def __init__(self):
            self.heard = []

        def push(self, audio):
            self.heard.append(np.asarray(audio))
            return np.zeros((1, 0), np.int64)

    inner = Recorder()
    ear = ShiftedEar(inner, 250)
    audio = np.arange(600, dtype=np.float32)
    for start in range(0, 600, 100):
        ear.push(audio[start:start + 100])
    assert np.array_equal(np.concatenate(inner.heard), audio[250:])
    assert ear.heard_samples == 600


def test_votes_must_be_positive():
    from voxloop.errors import VoxloopError
    from voxloop.realtime.engines.native import NativeEngine, NativeSettings

    with pytest.raises(VoxloopError, match="--native-votes must be at least 1"):
        NativeEngine(NativeSettings(votes=0))


@pytest.mark.slow
def test_the_native_engine_answers_with_three_votes():
    """The real student and tokenizer, three ears a third of a token apart, through the real
    server: each question answered, its words from one of the three rows."""
    from tests.helpers.server import ServerThread, speech_24k
    from tests.realtime.engines.helpers import spoken_turn
    from voxloop.realtime.engines.native import NativeEngine, NativeSettings

    engine = NativeEngine(NativeSettings(votes=3, slots=12))
    engine.warm_up()
    server = ServerThread(engine)
    try:
        for text, voice, expected in [("what is the capital of france", "flite:awb", "paris"),
                                      ("how do you spell cat", "piper:joe", "c a t")]:
            result = asyncio.run(spoken_turn(server.url, speech_24k(text, voice)))
            assert result["status"] == "completed" and result["audio_s"] > 0.5
            assert expected in result["transcript"]
        assert engine.batcher.stats().rows_per_call > 1.0  # the ears' rows share calls
    finally:
        server.stop()
        engine.batcher.shutdown()


def test_a_session_gets_all_its_slots_or_none():
    """Three slots, two votes per session: the second session cannot open and gives back
    the slot it got."""
    from voxloop.errors import VoxloopError
    from voxloop.realtime.engines.native import NativeEngine, NativeSession, NativeSettings

    engine = NativeEngine(NativeSettings(votes=2, slots=3))
    try:
        first = NativeSession(engine)
        with pytest.raises(VoxloopError, match="model slots are in use"):
            NativeSession(engine)
        assert len(engine.batcher._free) == 1
        first.close()
    finally:
        engine.batcher.shutdown()
