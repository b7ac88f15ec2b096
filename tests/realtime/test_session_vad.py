"""The session with server VAD: real Silero on synthetic speech (flite), the fake
engine hearing the turn live, barge-in. Well under a second each."""

from __future__ import annotations

from functools import cache

import numpy as np

from tests.realtime.fakes import FakeEngine, Harness, run_session, slow_script
from voxloop.audio import resample
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ


@cache
def question_24k() -> np.ndarray:
    """Synthetic speech (flite: ~50 ms to make) at 24 kHz."""
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize("what is the capital of france", "flite:kal16")
    return resample(samples, rate_hz, WIRE_RATE_HZ)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * WIRE_RATE_HZ), np.float32)


def test_server_vad_turn_is_heard_live():
    async def test(h: Harness):
        await h.append(np.concatenate([silence(0.3), question_24k(), silence(0.6)]))
        started = await h.until("input_audio_buffer.speech_started")
        stopped = await h.until("input_audio_buffer.speech_stopped")
        assert stopped["item_id"] == started["item_id"]
        assert (await h.until("response.done"))["response"]["status"] == "completed"
        h.turn_ms = (started["audio_start_ms"], stopped["audio_end_ms"])

    h = run_session(test, manual=False)
    fake = h.engine_session
    calls = fake.calls_but_hear()
    assert calls[0] == "new_turn" and calls[-2:] == ["respond", "close"]
    assert "pause" in calls  # a tentative end came before the confirmed one
    start_ms, end_ms = h.turn_ms
    turn = fake.turns[0]
    assert turn.heard_live and len(turn.audio_24k) == (end_ms - start_ms) * 24
    assert len(fake.heard_16k()) == (end_ms - start_ms) * 16  # the same span, heard at 16 kHz
    assert np.abs(fake.heard_16k()).max() > 0.05


def test_barge_in_cancels_and_the_client_truncates():
    engine = FakeEngine(slow_script(pieces=40, delay_s=0.01, tone_ms=200))

    async def test(h: Harness):
        await h.append(np.concatenate([silence(0.3), question_24k(), silence(0.6)]))
        first = await h.until("response.output_audio.delta")
        for _ in range(2):  # 600 ms of the answer sent (it leaves at most 500 ms ahead)
            await h.until("response.output_audio.delta")
        mark = len(h.events)
        await h.append(np.concatenate([question_24k(), silence(0.6)]))  # the user speaks again
        done = await h.until("response.done")
        second = await h.until("response.output_audio.delta")  # the interruption's own answer
        events, kinds = h.events[mark:], [e["type"] for e in h.events[mark:]]
        assert kinds[0] == "input_audio_buffer.speech_started"  # urgent: ahead of queued audio
        assert done["response"]["id"] == first["response_id"]
        assert done["response"]["status_details"]["reason"] == "turn_detected"
        assert not [e for e in events if e["type"] == "response.output_audio.delta"
                    and e["response_id"] == first["response_id"]]
        assert second["response_id"] != first["response_id"]
        # the client played 400 ms of the answer: it truncates the item there
        item_id = first["item_id"]
        await h.send({"type": "conversation.item.truncate", "item_id": item_id,
                      "content_index": 0, "audio_end_ms": 400})
        await h.until("conversation.item.truncated")
        assert h.session.items[item_id].audio_ms == 400
        assert h.session.items[item_id].text == " w0 w1"

    h = run_session(test, engine, manual=False)
    fake = h.engine_session
    assert fake.calls_but_hear().count("new_turn") == 2 and len(fake.turns) == 2
    assert all(turn.heard_live for turn in fake.turns)


def faint_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Room tone: noise far below Silero's speech threshold."""
    rng = np.random.default_rng(seed)
    return (0.003 * rng.standard_normal(int(seconds * WIRE_RATE_HZ))).astype(np.float32)


def test_silence_between_turns_never_fills_the_buffer():
    """Audio older than the prefix padding before any speech is dropped after every append:
    8 s of room tone with a 3 s buffer, then a question, is answered (the buffer used to
    fill with the silence and refuse every append: the session went deaf)."""
    held_ms = []

    async def test(h: Harness):
        step = 40 * WIRE_RATE_HZ // 1000
        room = faint_noise(8.0)
        for i in range(0, len(room), step):
            await h.append(room[i:i + step])
            held_ms.append(h.session.audio.buffered_ms)
        await h.append(np.concatenate([question_24k(), silence(0.6)]))
        started = await h.until("input_audio_buffer.speech_started")
        assert started["audio_start_ms"] >= 8000 - 300
        assert (await h.until("response.done"))["response"]["status"] == "completed"

    h = run_session(test, manual=False, max_buffer_s=3.0)
    assert not [e for e in h.events if e["type"] == "error"]
    # the prefix padding (300 ms) and at most one VAD window (32 ms) not judged yet
    assert max(held_ms) <= 300 + 32 + 40, max(held_ms)
    assert h.session.audio.end_ms >= 8000 + len(question_24k()) // 24


def test_a_turn_longer_than_the_buffer_is_cut_and_the_session_listens_on():
    """One turn of 5.4 s (the question three times without a pause) into a 3 s buffer: the
    turn is cut at 3 s with one clear error, its audio dropped; the speech that goes on
    starts a new turn, which is answered, and so is the next question."""
    held_ms = []
    engine = FakeEngine()

    async def test(h: Harness):
        q = question_24k()
        step = 40 * WIRE_RATE_HZ // 1000
        audio = np.concatenate([silence(0.3), q, q, q, silence(0.6)])
        for i in range(0, len(audio), step):
            await h.append(audio[i:i + step])
            held_ms.append(h.session.audio.buffered_ms)
        error = await h.next()
        while error["type"] != "error":
            error = await h.next()
        assert error["error"]["code"] == "input_audio_buffer_full"
        assert "this turn went on for" in error["error"]["message"]
        assert "3 s" in error["error"]["message"]
        assert (await h.until("response.done"))["response"]["status"] == "completed"
        await h.append(np.concatenate([q, silence(0.6)]))
        assert (await h.until("response.done"))["response"]["status"] == "completed"

    h = run_session(test, engine, manual=False, max_buffer_s=3.0)
    kinds = [e["type"] for e in h.events]
    assert kinds.count("error") == 1
    assert kinds.count("input_audio_buffer.speech_started") == 3  # cut, tail, next question
    assert kinds.count("input_audio_buffer.committed") == 2
    assert max(held_ms) <= 3000 + 40
    fake = h.engine_session
    assert len(fake.turns) == 2
    tail_ms = len(fake.turns[0].audio_24k) // 24  # what was left of the long turn
    assert 1000 < tail_ms < 5400 - 3000 + 300 + 300 + 1, tail_ms


def test_retuning_turn_detection_mid_turn_keeps_the_turn():
    """A session.update that keeps the type (here: a longer silence, no auto answer) while
    the user speaks takes effect in place: the turn begun goes on and is committed."""
    async def test(h: Harness):
        speech = question_24k()
        await h.append(np.concatenate([silence(0.3), speech[:len(speech) // 2]]))
        started = await h.until("input_audio_buffer.speech_started")
        await h.send({"type": "session.update", "session": {"audio": {"input": {
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400,
                               "create_response": False}}}}})
        await h.until("session.updated")
        await h.append(np.concatenate([speech[len(speech) // 2:], silence(0.8)]))
        stopped = await h.until("input_audio_buffer.speech_stopped")
        committed = await h.until("input_audio_buffer.committed")
        assert stopped["item_id"] == committed["item_id"] == started["item_id"]
        assert not [e for e in await h.drain(0.3) if e["type"] == "response.created"]

    run_session(test, manual=False)
