"""The session's state machine on a scripted fake engine, turn detection off (manual
turns): no socket, no models, milliseconds per test. Every event the harness reads
is checked against the ``openai`` package's types. Server VAD: test_session_vad.py."""

from __future__ import annotations

import asyncio
import base64
import time

import numpy as np
import pytest

from tests.realtime.api_types import server_event_types
from tests.realtime.fakes import (
    QUESTION_24K,
    FakeEngine,
    Harness,
    Piece,
    Script,
    audio_event,
    manual_turn,
    run_session,
    slow_script,
    tone_24k,
)
from voxloop.audio import pcm16_to_float
from voxloop.realtime.input_audio import InputAudio
from voxloop.realtime.server import ServerSettings
from voxloop.realtime.turns import TurnDetector
from voxloop.realtime.wire.session_config import TurnDetection

RESPONSE_EVENTS = [  # the default script: two pieces, each words then audio
    "response.created",
    "response.output_item.added", "conversation.item.added", "response.content_part.added",
    "response.output_audio_transcript.delta", "response.output_audio.delta",
    "response.output_audio_transcript.delta", "response.output_audio.delta",
    "response.output_audio.done", "response.output_audio_transcript.done",
    "response.content_part.done", "response.output_item.done", "conversation.item.done",
    "response.done"]


@pytest.fixture(scope="module", autouse=True)
def _loaded_once():
    """Load what takes seconds once, up front, as the server does at start (the API's
    validators, Silero, scipy's resampler), so each test takes milliseconds."""
    server_event_types(beta=False)
    server_event_types(beta=True)
    TurnDetector(TurnDetection())
    InputAudio(max_buffer_s=1.0)


def deltas_audio(events: list[dict], kind: str = "response.output_audio.delta") -> np.ndarray:
    return pcm16_to_float(b"".join(base64.b64decode(e["delta"]) for e in events
                                   if e["type"] == kind))


# -- session and input audio ------------------------------------------------------------
def test_session_created_and_updated():
    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"instructions": "be brief", "audio": {
            "input": {"transcription": {"model": "whisper-1"}}}}})
        updated = await h.until("session.updated")
        assert updated["session"]["instructions"] == "be brief"
        assert updated["session"]["audio"]["input"]["turn_detection"] is None
        assert updated["session"]["audio"]["input"]["transcription"]["model"] == "whisper-1"

    h = run_session(test)
    assert h.events[0]["session"]["id"] == h.session.id


def test_append_commit_clear_and_the_clock():
    async def test(h: Harness):
        committed = await manual_turn(h, tone_24k(300.0, 700))
        added = await h.until("conversation.item.added")
        assert added["item"]["id"] == committed["item_id"] and committed["previous_item_id"] is None
        assert h.session.items[committed["item_id"]].audio_ms == 700
        await h.append(tone_24k(300.0, 300))
        await h.send({"type": "input_audio_buffer.clear"})
        await h.until("input_audio_buffer.cleared")
        assert h.session.audio.buffered_ms == 0 and h.session.audio.end_ms == 1000
        await h.send({"type": "input_audio_buffer.commit", "event_id": "c1"})
        error = (await h.until("error"))["error"]
        assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "c1"
        second = await manual_turn(h, tone_24k(300.0, 250))
        assert second["previous_item_id"] == committed["item_id"]

    h = run_session(test)
    assert h.engine_session.calls_but_hear() == ["close"]  # manual turns: nothing heard live


def test_input_transcription_of_a_manual_commit():
    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"audio": {"input": {
            "transcription": {"model": "whisper-1"}}}}})
        committed = await manual_turn(h)
        done = await h.until("conversation.item.input_audio_transcription.completed")
        assert done["item_id"] == committed["item_id"] and done["transcript"] == "what time is it"
        assert done["usage"]["seconds"] == pytest.approx(0.5)

    run_session(test)


# -- responses ----------------------------------------------------------------------------
def test_response_lifecycle_events_in_order():
    engine = FakeEngine()

    async def test(h: Harness):
        await manual_turn(h)
        await h.drain()
        await h.send({"type": "response.create"})
        await h.until("response.done")

    h = run_session(test, engine)
    first = [e["type"] for e in h.events].index("response.created")
    response = h.events[first:]
    assert [e["type"] for e in response] == RESPONSE_EVENTS
    done = response[-1]["response"]
    assert done["status"] == "completed" and done["status_details"] is None
    assert np.abs(deltas_audio(response) - engine.script.audio_24k()).max() < 1e-4
    assert response[-5]["transcript"] == "It is noon."  # output_audio_transcript.done
    turn = h.engine_session.turns[0]
    assert not turn.heard_live and len(turn.audio_24k) == len(QUESTION_24K)
    user, answer = h.session.items.values()
    assert user.text == "what time is it" and answer.text == "It is noon."


def test_text_turn_with_history():
    async def test(h: Harness):
        for role, text in (("system", "You are terse."), ("user", "hello")):
            await h.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": role, "content": [{"type": "input_text",
                                                              "text": text}]}})
        await h.send({"type": "response.create"})
        await h.until("response.done")

    h = run_session(test)
    turn = h.engine_session.turns[0]
    assert turn.text == "hello" and turn.audio_24k is None
    assert turn.history == ({"role": "system", "content": "You are terse."},)


def test_cancel_mid_response():
    engine = FakeEngine(slow_script(pieces=50, delay_s=0.02))

    async def test(h: Harness):
        await manual_turn(h)
        await h.send({"type": "response.create"})
        delta = await h.until("response.output_audio.delta")
        await h.send({"type": "response.cancel", "response_id": delta["response_id"]})
        done = await h.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        assert not [e for e in await h.drain(0.1) if "delta" in e["type"]]
        await h.send({"type": "response.cancel", "event_id": "again"})
        assert (await h.until("error"))["error"]["code"] == "response_cancel_not_active"

    run_session(test, engine)
    assert engine.sessions[0].pieces_made < 10  # the engine stopped within a step


def test_output_audio_buffer_clear_cancels():
    async def test(h: Harness):
        await manual_turn(h)
        await h.send({"type": "response.create"})
        delta = await h.until("response.output_audio.delta")
        await h.send({"type": "output_audio_buffer.clear"})
        cleared = await h.until("output_audio_buffer.cleared")
        assert cleared["response_id"] == delta["response_id"]
        assert (await h.until("response.done"))["response"]["status"] == "cancelled"

    run_session(test, FakeEngine(slow_script(pieces=50, delay_s=0.02)))


def test_engine_failure_fails_the_response_not_the_session():
    script = Script(pieces=(Piece("One"), Piece(" two")), fail_after=1)

    async def test(h: Harness):
        await manual_turn(h)
        await h.send({"type": "response.create"})
        error = await h.until("error")
        assert error["error"]["code"] == "engine_error"
        assert (await h.until("response.done"))["response"]["status"] == "failed"
        await manual_turn(h)  # the session goes on

    run_session(test, FakeEngine(script))


def test_second_response_while_one_is_active_is_refused():
    async def test(h: Harness):
        await manual_turn(h)
        await h.send({"type": "response.create"})
        await h.send({"type": "response.create", "event_id": "twice"})
        error = await h.until("error")
        assert error["error"]["code"] == "conversation_already_has_active_response"
        assert error["error"]["event_id"] == "twice"

    run_session(test, FakeEngine(slow_script(pieces=5, delay_s=0.02)))


# -- items --------------------------------------------------------------------------------
def test_truncate_retrieve_delete():
    engine = FakeEngine(Script(pieces=(Piece("One two three four.", 440.0, 1000),
                                       Piece(" Five six.", 660.0, 1000))))

    async def test(h: Harness):
        committed = await manual_turn(h)
        await h.send({"type": "response.create"})
        answer_id = (await h.until("response.done"))["response"]["output"][0]["id"]
        await h.send({"type": "conversation.item.truncate", "item_id": answer_id,
                      "content_index": 0, "audio_end_ms": 1500})
        truncated = await h.until("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 1500
        await h.send({"type": "conversation.item.retrieve", "item_id": answer_id})
        item = (await h.until("conversation.item.retrieved"))["item"]
        assert item["content"][0]["transcript"] == "One two three four. Five"
        assert len(base64.b64decode(item["content"][0]["audio"])) == 1500 * 48  # as cut
        await h.send({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
        asked = (await h.until("conversation.item.retrieved"))["item"]["content"][0]
        assert asked["type"] == "input_audio" and len(base64.b64decode(asked["audio"])) > 0
        for bad, code in ((dict(content_index=1, audio_end_ms=10), "invalid_value"),
                          (dict(content_index=0, audio_end_ms=1600), "invalid_value")):
            await h.send({"type": "conversation.item.truncate", "item_id": answer_id, **bad})
            assert (await h.until("error"))["error"]["code"] == code
        await h.send({"type": "conversation.item.delete", "item_id": committed["item_id"]})
        assert (await h.until("conversation.item.deleted"))["item_id"] == committed["item_id"]
        await h.send({"type": "conversation.item.delete", "item_id": committed["item_id"]})
        assert (await h.until("error"))["error"]["code"] == "item_not_found"

    h = run_session(test, engine, output_lead_ms=10_000)  # no pacing: the answer leaves at once
    assert list(h.session.items.values())[0].role == "assistant"


def test_oldest_items_are_forgotten_past_max_items():
    async def test(h: Harness):
        for n in range(5):
            await h.send({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"m{n}"}]}})
        await h.drain()

    h = run_session(test, max_items=3)
    assert [i.text for i in h.session.items.values()] == ["m2", "m3", "m4"]


# -- bad input ----------------------------------------------------------------------------
BAD_EVENTS = [
    ('{"type": "nonsense.event"}', "unknown_event"),
    ("{not json", "invalid_json"),
    ({"type": "input_audio_buffer.append", "audio": "***"}, "invalid_audio"),
    ({"type": "input_audio_buffer.append", "audio": "AAAA"}, "invalid_audio"),  # 3 bytes
    ({"type": "response.create"}, "invalid_value"),  # nothing to answer yet
    ({"type": "output_audio_buffer.clear"}, "response_cancel_not_active"),
    ({"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0,
      "audio_end_ms": 0}, "item_not_found"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "robot",
                                                   "content": [{"type": "input_text"}]}},
     "invalid_value"),
    ({"type": "conversation.item.create", "item": {"role": "user", "content": [
        {"type": "input_text", "text": "x"}]}, "previous_item_id": "nope"}, "item_not_found"),
    ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "smart_vad"}}}}}, "unsupported_value"),
    ({"type": "session.update", "session": {"audio": {"input": {"format": {
        "type": "audio/pcmu"}}}}}, "unsupported_value"),
]


def test_bad_input_gets_errors_and_the_session_goes_on():
    async def test(h: Harness):
        for event, code in BAD_EVENTS:
            await h.send(event)
            error = (await h.until("error"))["error"]
            assert error["code"] == code, (event, error)
        await manual_turn(h)  # still a working session

    run_session(test)


def test_input_buffer_full():
    async def test(h: Harness):
        await h.append(tone_24k(300.0, 400), chunk_ms=400)
        await h.send({"type": "input_audio_buffer.append", "event_id": "big",
                      "audio": base64.b64encode(bytes(2 * 24 * 200)).decode()})
        error = (await h.until("error"))["error"]
        assert error["code"] == "input_audio_buffer_full" and error["event_id"] == "big"
        # the hint fits the case: only without turn detection does the buffer fill up
        assert "turn detection is off" in error["message"] and "server_vad" in error["message"]
        assert h.session.audio.buffered_ms == 400  # the chunk was dropped whole

    run_session(test, max_buffer_s=0.5)


def test_speech_only_engine_refuses_text():
    async def test(h: Harness):
        await h.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text",
                                                          "text": "hi"}]}})
        await h.send({"type": "response.create"})
        assert (await h.until("error"))["error"]["code"] == "unsupported_value"
        await h.send(audio_event(QUESTION_24K))  # an audio item sent whole is answered
        await h.send({"type": "response.create"})
        assert (await h.until("response.done"))["response"]["status"] == "completed"

    run_session(test, FakeEngine(accepts_text=False))


def test_beta_names_and_types():
    async def test(h: Harness):
        await manual_turn(h)
        await h.send({"type": "response.create"})
        await h.until("response.done")

    h = run_session(test, beta=True)
    kinds = [e["type"] for e in h.events]
    assert "conversation.item.created" in kinds and "response.audio.delta" in kinds
    assert not [k for k in kinds if k in ("conversation.item.done", "conversation.item.added")]


def test_close_gives_back_the_engine_session():
    h = run_session(lambda h: asyncio.sleep(0), FakeEngine(slow_script(pieces=3, delay_s=0.01)))
    assert h.engine_session.closed and len(h.engine.sessions) == 1


def test_session_limits_come_from_the_server_settings():
    s = ServerSettings(max_buffer_s=7.0, max_items=9, output_lead_ms=123)
    limits = s.session_limits()
    assert (limits.max_buffer_s, limits.max_items, limits.output_lead_ms) == (7.0, 9, 123)


def test_the_next_response_may_start_as_soon_as_response_done_arrives(monkeypatch):
    from voxloop.realtime.response import ResponseRun

    work = ResponseRun._work

    def slow_to_end(self, loop):  # the engine's thread is still ending after done (a busy CPU)
        work(self, loop)
        time.sleep(0.5)

    monkeypatch.setattr(ResponseRun, "_work", slow_to_end)
    engine = FakeEngine()

    async def test(h: Harness):
        await manual_turn(h)
        for _ in range(2):
            await h.send({"type": "response.create"})
            done = await h.until("response.done")
            assert done["response"]["status"] == "completed"
        assert not [e for e in await h.drain() if e["type"] == "error"]

    run_session(test, engine)
