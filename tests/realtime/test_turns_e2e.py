"""Spoken turns through the real server: real Silero, the real cascade, Whisper as judge."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests.helpers.server import (
    RATE_HZ,
    append_event,
    connect,
    silence,
    speech_24k,
    stream_realtime,
)

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"


def heard(judge, samples_24k: np.ndarray) -> str:
    from voxloop.distill.teachers.domain.text import normalize

    return normalize(judge.transcribe(samples_24k, RATE_HZ))  # "seven" and "7" both -> "7"


def test_spoken_turn_server_vad(server, judge):
    """Question at real-time pace, then silence: VAD ends the turn and the answer is spoken."""
    question = speech_24k(QUESTION)

    async def run():
        client = await connect(server.url + "?model=voxloop")
        assert (await client.recv())["type"] == "session.created"
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"transcription": {"model": "whisper-1"},
                      "turn_detection": {"type": "server_vad"}}}}})
        assert (await client.recv())["type"] == "session.updated"
        sender = asyncio.create_task(stream_realtime(
            client, np.concatenate([silence(0.5), question, silence(1.5)])))
        started = await client.until("input_audio_buffer.speech_started")
        stopped = await client.until("input_audio_buffer.speech_stopped")
        done = await client.until("response.done", timeout_s=60)
        await sender
        await client.ws.close()
        return client, started, stopped, done

    client, started, stopped, done = asyncio.run(run())
    assert done["response"]["status"] == "completed"
    speech_ms = len(question) * 1000 // RATE_HZ
    # The onset is inside the question's first half second (prefix padding before it);
    # the end is after the question and at most ~silence_duration + 2 windows later.
    assert 0 <= started["audio_start_ms"] <= 1000
    assert 500 + speech_ms - 400 <= stopped["audio_end_ms"] <= 500 + speech_ms + 300 + 200
    types = client.types()
    expected = ["input_audio_buffer.committed", "conversation.item.added",
                "response.created", "response.output_item.added",
                "response.content_part.added", "response.output_audio.delta",
                "response.output_audio.done", "response.output_audio_transcript.done",
                "response.content_part.done", "response.output_item.done", "response.done"]
    positions = [types.index(t) for t in expected]
    assert positions == sorted(positions), types
    assert "conversation.item.input_audio_transcription.completed" in types
    transcript = next(r.event["transcript"] for r in client.events
                      if r.event["type"] == "response.output_audio_transcript.done")
    assert "paris" in transcript.lower()
    assert "paris" in heard(judge, client.answer_audio())


def test_text_turn_in_beta_protocol(server):
    """A typed question with the beta header: beta event names, beta types validate."""
    async def run():
        client = await connect(server.url, beta=True)
        created = await client.recv()
        assert created["type"] == "session.created"
        assert created["session"]["input_audio_format"] == "pcm16"
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "how many legs does a spider have"}]}})
        await client.until("conversation.item.created")
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
        await client.ws.close()
        return client, done

    client, done = asyncio.run(run())
    types = client.types()
    assert done["response"]["status"] == "completed"
    assert "response.audio.delta" in types and "response.audio_transcript.done" in types
    assert not any(t.startswith("response.output_audio") for t in types)
    transcript = next(r.event["transcript"] for r in client.events
                      if r.event["type"] == "response.audio_transcript.done")
    assert "eight" in transcript.lower()


def test_official_openai_client(server, judge):
    """The official `openai` package's realtime client, unmodified, completes a spoken turn."""
    from openai import OpenAI

    question = speech_24k("how many days are in a week", "flite:slt")
    client = OpenAI(api_key="unused", websocket_base_url=server.url.rsplit("/", 1)[0])
    audio, transcript = bytearray(), ""
    with client.realtime.connect(model="voxloop") as conn:
        conn.session.update(session={"type": "realtime", "audio": {"input": {
            "turn_detection": None}}})
        for chunk in np.array_split(question, 20):
            conn.input_audio_buffer.append(audio=append_event(chunk)["audio"])
        conn.input_audio_buffer.commit()
        conn.response.create()
        for event in conn:
            if event.type == "response.output_audio.delta":
                import base64
                audio.extend(base64.b64decode(event.delta))
            elif event.type == "response.output_audio_transcript.done":
                transcript = event.transcript
            elif event.type == "error":
                pytest.fail(f"server error: {event.error}")
            elif event.type == "response.done":
                assert event.response.status == "completed"
                break
    from voxloop.audio import pcm16_to_float

    assert "seven" in transcript.lower()
    assert "7" in heard(judge, pcm16_to_float(bytes(audio))).split()


def test_barge_in_cancels_and_truncate_cuts(server):
    """Speech during the answer: speech_started, no more audio, response.done cancelled."""
    question = speech_24k("what can you do")
    interruption = speech_24k("stop, wait a moment please", "flite:awb")

    async def run():
        client = await connect(server.url)
        await client.recv()
        # server_vad: the turn ends inside the 0.6 s of silence sent (semantic_vad may wait
        # longer on this question), and the interruption is a new turn at any distance
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad"}}}}})
        assert (await client.recv())["type"] == "session.updated"
        sender = asyncio.create_task(stream_realtime(
            client, np.concatenate([question, silence(0.6)])))
        first = await client.until("response.output_audio.delta")
        await sender
        onset_s = time.perf_counter()
        interrupter = asyncio.create_task(stream_realtime(
            client, np.concatenate([interruption, silence(0.2)])))
        done = await client.until("response.done")
        await asyncio.sleep(0.5)
        while True:  # anything still in flight
            try:
                await client.recv(0.3)
            except asyncio.TimeoutError:
                break
        interrupter.cancel()
        return client, first, onset_s, done

    client, first, onset_s, done = asyncio.run(run())
    rid = first["response_id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    i_done = client.events.index(next(r for r in client.events if r.event is done))
    late = [r for r in client.events[i_done:] if r.event["type"] == "response.output_audio.delta"
            and r.event["response_id"] == rid]
    assert not late, "audio of the cancelled response arrived after response.done"
    last_delta_s = max(r.t for r in client.events if r.event["type"] ==
                       "response.output_audio.delta" and r.event["response_id"] == rid)
    stop_ms = 1000 * (last_delta_s - onset_s)
    print(f"\nbarge-in: onset of interrupting speech -> last audio delta {stop_ms:.0f} ms")
    assert "input_audio_buffer.speech_started" in [r.event["type"] for r in client.events
                                                   if r.t >= onset_s]


def test_truncate_cuts_audio_and_transcript(server):
    async def run():
        client = await connect(server.url)
        await client.recv()
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "what can you do"}]}})
        await client.send({"type": "response.create"})
        done = await client.until("response.done")
        item = done["response"]["output"][0]
        await client.send({"type": "conversation.item.truncate", "item_id": item["id"],
                           "content_index": 0, "audio_end_ms": 800})
        truncated = await client.until("conversation.item.truncated")
        await client.send({"type": "conversation.item.retrieve", "item_id": item["id"]})
        retrieved = await client.until("conversation.item.retrieved")
        await client.send({"type": "conversation.item.truncate", "item_id": item["id"],
                           "content_index": 0, "audio_end_ms": 999_999})
        error = await client.until("error")
        await client.ws.close()
        return item, truncated, retrieved, error

    item, truncated, retrieved, error = asyncio.run(run())
    full = item["content"][0]["transcript"]
    cut = retrieved["item"]["content"][0]["transcript"]
    assert truncated["audio_end_ms"] == 800
    assert 0 < len(cut.split()) < len(full.split()), (cut, full)
    assert full.startswith(cut)
    assert error["error"]["code"] == "invalid_value" and "past the end" in error["error"]["message"]
