"""Fast unit tests of the protocol pieces, the turn detector and the outbox."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.helpers.server import RATE_HZ, silence, speech_24k
from voxloop.audio import MODEL_RATE_HZ, StreamingResampler
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.turns import TurnDetector
from voxloop.realtime.wire.items import Item
from voxloop.realtime.wire.protocol import (
    ProtocolError,
    decode_audio,
    ga_type,
    parse_client_event,
    wire_type,
)
from voxloop.realtime.wire.session_config import SessionConfig, TurnDetection


def test_beta_names_round_trip():
    assert wire_type("response.output_audio.delta", beta=True) == "response.audio.delta"
    assert wire_type("response.output_audio.delta", beta=False) == "response.output_audio.delta"
    assert ga_type("response.audio_transcript.delta") == "response.output_audio_transcript.delta"
    assert wire_type("session.created", beta=True) == "session.created"


@pytest.mark.parametrize("raw, code", [
    ('{"type": "response.cancel", "response_id": 3}', "invalid_type"),
    ('{"type": "conversation.item.truncate", "item_id": "i", "content_index": true, '
     '"audio_end_ms": 1}', "invalid_type"),
    ('{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, '
     '"audio_end_ms": 99999999999}', "invalid_value"),
    (b"\x00", "binary_frame"),
])
def test_parse_rejects(raw, code):
    with pytest.raises(ProtocolError) as err:
        parse_client_event(raw)
    assert err.value.code == code


def test_decode_audio_checks_bytes():
    with pytest.raises(ProtocolError, match="even number"):
        decode_audio("AAAA")  # 3 bytes
    assert decode_audio("AAA=") == b"\x00\x00"


def test_session_update_ga_and_beta_shapes():
    ga = SessionConfig().updated({"type": "realtime", "instructions": "be brief", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 450},
                  "transcription": {"model": "whisper-1"}},
        "output": {"voice": "joe"}}})
    assert ga.instructions == "be brief" and ga.turn_detection.silence_duration_ms == 450
    assert ga.transcription_model == "whisper-1"
    beta = SessionConfig().updated({"turn_detection": None, "input_audio_format": "pcm16"})
    assert beta.turn_detection is None
    assert ga.wire("s", beta=False)["audio"]["input"]["turn_detection"]["silence_duration_ms"] \
        == 450
    assert beta.wire("s", beta=True)["turn_detection"] is None


def test_streaming_resampler_equals_one_pass():
    x = np.random.default_rng(0).standard_normal(RATE_HZ).astype(np.float32)
    whole = StreamingResampler(24000, 16000).push(x)
    r, parts, i = StreamingResampler(24000, 16000), [], 0
    for n in np.random.default_rng(1).integers(1, 900, 200):
        parts.append(r.push(x[i:i + n]))
        i += n
        if i >= len(x):
            break
    parts.append(r.push(x[i:]))
    streamed = np.concatenate(parts)
    assert len(whole) == 16000 and np.array_equal(whole, streamed)
    assert np.array_equal(StreamingResampler(24000, 24000).push(x[:100]), x[:100])  # one rate


def test_turn_detector_on_speech_and_silence():
    speech = speech_24k("what is the capital of france")
    signal = np.concatenate([silence(1.0), speech, silence(1.0)])
    detector = TurnDetector(TurnDetection(silence_duration_ms=300, prefix_padding_ms=200))
    resampler, events = StreamingResampler(RATE_HZ, MODEL_RATE_HZ), []
    for i in range(0, len(signal), 480):
        events += detector.push(resampler.push(signal[i:i + 480]))
    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_started" and kinds[-2:] == ["speech_paused", "speech_stopped"]
    # pauses between words come in pairs: a tentative end, then speech again
    assert all(a == "speech_paused" and b == "speech_resumed"
               for a, b in zip(kinds[1:-2:2], kinds[2:-2:2], strict=True))
    start, pause, stop = events[0], events[-2], events[-1]
    assert pause.audio_ms == stop.speech_ms  # the confirmed end is the last tentative one
    end_ms = 1000 + len(speech) * 1000 // RATE_HZ
    assert 1000 <= start.speech_ms <= 1400 and start.audio_ms == start.speech_ms - 200
    # Silero lags the true end by up to two 32 ms windows
    assert end_ms - 400 <= stop.speech_ms <= end_ms + 64 and stop.audio_ms == stop.speech_ms + 300
    quiet = TurnDetector(TurnDetection())
    assert quiet.push(np.zeros(2 * MODEL_RATE_HZ, np.float32)) == []
    noise = np.random.default_rng(0).standard_normal(2 * MODEL_RATE_HZ).astype(np.float32) * 0.01
    assert quiet.push(noise) == []


def test_a_turn_starting_soon_after_the_last_one_starts_where_that_one_ended():
    """Speech again 250 ms after a turn (server_vad at 200 ms of silence, 300 ms of prefix
    padding): the new turn's audio starts where the last one's ended, not inside it."""
    speech = speech_24k("what is the capital of france")
    signal = np.concatenate([silence(0.5), speech, silence(0.25), speech, silence(1.0)])
    detector = TurnDetector(TurnDetection(silence_duration_ms=200, prefix_padding_ms=300))
    resampler, events = StreamingResampler(RATE_HZ, MODEL_RATE_HZ), []
    for i in range(0, len(signal), 480):
        events += detector.push(resampler.push(signal[i:i + 480]))
    edges = [e for e in events if e.kind in ("speech_started", "speech_stopped")]
    assert [e.kind for e in edges] == ["speech_started", "speech_stopped"] * 2
    first_end, second = edges[1], edges[2]
    assert second.speech_ms - 300 < first_end.audio_ms  # the padding would reach back
    assert second.audio_ms == first_end.audio_ms


def test_audio_a_turn_can_still_use():
    """``keep_from_ms`` (what the session trims to under server VAD) never passes the start
    of a turn still to come, prefix padding included; it is None while a turn is spoken and
    follows the clock again once it ended."""
    speech = speech_24k("what is the capital of france")
    signal = np.concatenate([silence(1.0), speech, silence(1.0)])
    detector = TurnDetector(TurnDetection(prefix_padding_ms=200))
    resampler, steps = StreamingResampler(RATE_HZ, MODEL_RATE_HZ), []
    for i in range(0, len(signal), 480):
        before = detector.keep_from_ms
        steps.append((before, detector.push(resampler.push(signal[i:i + 480]))))
    started = next(n for n, (_, events) in enumerate(steps)
                   if [e for e in events if e.kind == "speech_started"])
    stopped = next(n for n, (_, events) in enumerate(steps)
                   if [e for e in events if e.kind == "speech_stopped"])
    onset = steps[started][1][0]
    assert all(keep is not None and keep <= onset.audio_ms for keep, _ in steps[:started + 1])
    assert steps[started][0] is not None and steps[started][0] > 600  # silence was let go
    assert all(keep is None for keep, _ in steps[started + 1:stopped + 1])
    last = detector.keep_from_ms
    assert last is not None and last == detector.judged_ms - 200
    assert detector.judged_ms > len(signal) * 1000 // RATE_HZ - 40


def test_item_truncate_keeps_heard_words():
    item = Item("i", "assistant", audio=bytearray())
    item.add_piece("One two three four.")
    item.audio.extend(bytes(48 * 1000))  # 1000 ms
    item.add_piece(" Five six.")
    item.audio.extend(bytes(48 * 1000))
    item.truncate(1500, None)
    assert item.audio_ms == 1500 and item.text == "One two three four. Five"
    with pytest.raises(ProtocolError, match="past the end"):
        item.truncate(2000, None)


def test_item_truncated_again_keeps_no_word_the_first_cut_dropped():
    item = Item("i", "assistant", audio=bytearray())
    item.add_piece("one two three four")
    item.audio.extend(bytes(48 * 1000))
    item.truncate(500, None)
    assert item.text == "one two"
    item.truncate(400, None)  # the client cuts again, earlier: never more words than before
    assert item.audio_ms == 400 and item.text == "one"


def test_outbox_urgent_overtakes_audio_only_and_cancel_drops_audio():
    def audio(n: int) -> dict:
        return {"type": "response.output_audio.delta", "response_id": "r", "n": n}

    async def run():
        box = Outbox(max_stream_events=4, max_events=100)
        box.put({"type": "input_audio_buffer.speech_stopped", "item_id": "a"})
        for n in range(4):
            box.put(audio(n))  # the 4th is one past the backlog: dropped
        box.put_urgent({"type": "input_audio_buffer.speech_started", "item_id": "b"})
        sent = [await box.get(), await box.get()]
        dropped = box.drop_audio("r")
        box.put({"type": "response.done", "response_id": "r"})
        box.put_urgent({"type": "error"})  # after an event that is not audio: in order
        sent += [await box.get(), await box.get()]
        return sent, dropped, box.dropped

    sent, dropped, backlog = asyncio.run(run())
    assert [e["type"] for e in sent] == [  # the last turn's end before the next one's start
        "input_audio_buffer.speech_stopped", "input_audio_buffer.speech_started",
        "response.done", "error"]
    assert dropped == 3 and backlog == 1


def test_a_response_cancelled_before_it_began_never_asks_the_engine():
    """Turn N's end and turn N+1's start in one chunk: N's answer is cancelled before its
    worker runs, and must not touch the engine session (now hearing N+1)."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.realtime.fakes import FakeEngine
    from voxloop.realtime.engines.base import Turn
    from voxloop.realtime.response import ResponseRun

    session = FakeEngine().open()

    async def run() -> str:
        outbox = Outbox(max_stream_events=100, max_events=100)
        response = ResponseRun(session, Turn(audio_24k=np.zeros(2400, np.float32)), outbox,
                               False, "conv", "joe", on_user_transcript=lambda text: None,
                               on_item=lambda item: None, lead_ms=500)
        response.cancel("turn_detected")
        with ThreadPoolExecutor(1) as executor:
            status = await response.run(executor)
            assert await response.engine_done(5.0)
        return status

    assert asyncio.run(run()) == "cancelled"
    assert "respond" not in session.calls
