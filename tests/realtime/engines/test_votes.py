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


def test_the_flush_time_is_the_sessions_or_the_slowest_rows():
    first, second = _answer(["a"]), _answer(["a"])
    voted, _ = _vote(first, second)
    assert voted.flush_ms is None
    first.flush_ms, second.flush_ms = 3.0, 5.0  # a tentative answer's tails, per row
    assert voted.flush_ms == 5.0
    voted.flush_ms = 2.0  # the session flushed every ear itself
    assert voted.flush_ms == 2.0


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
    with pytest.raises(VoxloopError, match="--native-voting-sessions must be 0"):
        NativeEngine(NativeSettings(voting_sessions=-1))
    with pytest.raises(VoxloopError, match="--native-votes-up-to-sessions must be 0"):
        NativeEngine(NativeSettings(votes_up_to_sessions=-2))
    # no slot, or prefill of no frame at a time (the model thread would wait forever)
    with pytest.raises(VoxloopError, match="--native-slots must be at least 1, not 0"):
        NativeEngine(NativeSettings(slots=0))
    with pytest.raises(VoxloopError, match="--native-max-prefill-frames must be at least 1"):
        NativeEngine(NativeSettings(max_prefill_frames=0))


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

    engine = NativeEngine(NativeSettings(votes=2, voting_sessions=0, slots=3))
    try:
        first = NativeSession(engine)
        with pytest.raises(VoxloopError, match="model slots are in use"):
            NativeSession(engine)
        assert len(engine.batcher._free) == 1 and engine.seats.taken == 1
        first.close()
        first.close()  # twice: nothing given back twice
        assert len(engine.batcher._free) == 3 and engine.seats.taken == 0
    finally:
        engine.batcher.shutdown()


def test_only_the_first_sessions_vote_and_only_while_few_are_open():
    from voxloop.realtime.engines.seats import VotingSeats

    seats = VotingSeats(votes=4, most=2, up_to_open=3)
    assert [seats.claim() for _ in range(3)] == [4, 4, 1]
    assert seats.ears_now(4) == 4 and seats.ears_now(1) == 1
    assert seats.claim() == 1  # a fourth session: more open than votes are for
    assert seats.ears_now(4) == 1
    seats.release(1)
    seats.release(1)  # two one-ear sessions close
    assert seats.ears_now(4) == 4 and seats.open == 2
    seats.release(4)  # a voting one: its seat is free again
    assert seats.claim() == 4 and seats.taken == 2
    assert [VotingSeats(votes=3, most=0).claim() for _ in range(5)] == [3] * 5
    assert VotingSeats(votes=1, most=1).claim() == 1
    always = VotingSeats(votes=4, most=1, up_to_open=0)
    assert [always.claim() for _ in range(9)][0] == 4 and always.ears_now(4) == 4


def test_a_second_session_hears_with_one_ear_and_a_third_silences_the_votes():
    """Default seats: the first session has three slots, the next ones one; its turns are
    heard with three ears while two sessions are open, with one once three are."""
    from voxloop.realtime.engines.native import NativeEngine, NativeSession, NativeSettings

    engine = NativeEngine(NativeSettings(votes=3, slots=8))
    audio = np.zeros(3200, np.float32)
    try:
        # a transcription (or a turn sent whole beside a live one) borrows one slot, and
        # neither counts as a session nor takes the voting seat
        helper = NativeSession(engine, borrowed=True)
        assert len(helper.slots) == 1 and (engine.seats.open, engine.seats.taken) == (0, 0)
        helper.close()
        assert (engine.seats.open, engine.seats.taken) == (0, 0)
        first, second = NativeSession(engine), NativeSession(engine)
        assert (len(first.slots), len(second.slots)) == (3, 1)
        first.hear(audio)
        second.hear(audio)
        assert (len(first._ears), len(second._ears)) == (3, 1)
        third = NativeSession(engine)
        first.new_turn()
        first.hear(audio)
        assert len(first._ears) == 1  # three open: one ear, one answer
        answer = first.end_of_turn()
        assert not hasattr(answer, "answers")
        first.stop(answer)
        for session in (second, third):
            session.close()
        first.new_turn()
        first.hear(audio)
        assert len(first._ears) == 3 and len(first.end_of_turn().answers) == 3
        first.set_turn_detection(True, quick=True)  # semantic_vad: no silence to hide the vote in
        first.new_turn()
        first.hear(audio)
        assert len(first._ears) == 1 and len(first.slots) == 3  # the seat is kept
        first.set_turn_detection(True, quick=False)
        first.new_turn()
        first.hear(audio)
        assert len(first._ears) == 3
        first.close()
        first.close()  # twice: nothing given back twice
        assert engine.seats.open == 0 and engine.seats.taken == 0
    finally:
        engine.batcher.shutdown()


@pytest.mark.slow  # the bundled student
def test_quick_turns_vote_too_when_told():
    """``--native-votes-quick-turns``: semantic_vad's turns are heard with every ear."""
    from voxloop.realtime.engines.native import NativeEngine, NativeSession, NativeSettings

    engine = NativeEngine(NativeSettings(votes=2, slots=4, votes_quick_turns=True))
    try:
        session = NativeSession(engine)
        session.set_turn_detection(True, quick=True)
        session.hear(np.zeros(3200, np.float32))
        assert len(session._ears) == 2 and len(session.end_of_turn().answers) == 2
        session.close()
    finally:
        engine.batcher.shutdown()
