"""The native engine through the real server: live prefill, speculative answers,
continuous batching across sessions, barge-in."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest

from tests.helpers.server import ServerThread, connect, silence, speech_24k, stream_realtime
from tests.realtime.engines.helpers import spoken_turn

pytestmark = pytest.mark.slow

QUESTIONS = [("name the highest mountain in the world", "festival:slt-hts"),
             ("what is the capital of france", "flite:awb"),
             ("how do you spell cat", "piper:joe")]


@pytest.fixture(scope="module")
def native_server(native_engine):
    s = ServerThread(native_engine)
    yield s
    s.stop()


def test_native_spoken_turn(native_server, native_engine):
    text, voice = QUESTIONS[0]
    result = asyncio.run(spoken_turn(native_server.url, speech_24k(text, voice)))
    assert result["status"] == "completed"
    assert result["audio_s"] > 0.5 and result["transcript"]
    vocab = set(native_engine.tokenizer.vocab["text"])
    assert set(result["transcript"].split()) <= vocab
    print(f"\nnative: {result['transcript']!r}, {result['audio_s']:.1f} s of audio, speech_stopped"
          f" -> first audio delta {result['first_audio_ms']:.0f} ms")


def test_concurrent_sessions_each_get_their_own_answer(native_server, native_engine):
    """Three questions alone, then all at once in three sessions: batched together, each
    session's answer is the one it got alone. (How often they share a model call is printed,
    not asserted: the bundled student's mouth says an answer without model calls, so after
    the question a session needs only a few word steps, which live sessions rarely run at
    the same moment; test_batcher checks the sharing on a workload that overlaps.)"""
    questions = [speech_24k(text, voice) for text, voice in QUESTIONS]
    longest = max(len(q) for q in questions)  # leading silence: every question ends at
    questions = [np.concatenate([silence((longest - len(q)) / 24000), q])  # once, so the
                 for q in questions]  # answers overlap (a fast student writes one in ~0.1 s)
    alone = [asyncio.run(spoken_turn(native_server.url, q)) for q in questions]
    calls_before = native_engine.batcher.stats()

    async def together():
        return await asyncio.gather(*(spoken_turn(native_server.url, q) for q in questions))

    at_once = asyncio.run(together())
    stats = native_engine.batcher.stats()
    rows = (stats.rows_per_call * stats.calls - calls_before.rows_per_call * calls_before.calls) \
        / (stats.calls - calls_before.calls)
    print(f"\nalone: {[a['transcript'] for a in alone]}\nrows per model call at once: {rows:.2f}")
    assert len({a["transcript"] for a in alone}) >= 2, "the questions should get different answers"
    for a, b in zip(alone, at_once, strict=True):
        assert b["status"] == "completed"
        assert b["transcript"] == a["transcript"]


def test_native_barge_in(native_server):
    text, voice = QUESTIONS[1]
    question = speech_24k(text, voice)
    interruption = speech_24k("stop, wait a moment please", "festival:slt-hts")

    async def run():
        client = await connect(native_server.url)
        await client.recv()
        await stream_realtime(client, np.concatenate([question, silence(0.5)]))
        first = await client.until("response.output_audio.delta", timeout_s=30)
        onset_s = time.perf_counter()
        interrupter = asyncio.create_task(stream_realtime(
            client, np.concatenate([interruption, silence(0.8)])))
        done = await client.until("response.done")
        await interrupter
        await client.until("response.done", timeout_s=30)  # the interruption's own answer
        return client, first, onset_s, done

    client, first, onset_s, done = asyncio.run(run())
    rid = first["response_id"]
    assert done["response"]["status"] == "cancelled"
    last = max(r.t for r in client.events if r.event["type"] == "response.output_audio.delta"
               and r.event["response_id"] == rid)
    print(f"\nnative barge-in: onset -> last audio delta {1000 * (last - onset_s):.0f} ms")
    i_done = next(i for i, r in enumerate(client.events) if r.event is done)
    assert not [r for r in client.events[i_done:]
                if r.event.get("response_id") == rid and "delta" in r.event["type"]]
    # the interruption is a new turn: it gets its own answer
    assert [r.event["response"]["status"] for r in client.events
            if r.event["type"] == "response.done"][-1] == "completed"


def test_an_afterthought_soon_after_the_question_is_one_turn(native_server):
    """semantic_vad (high) with the bundled end-of-turn model and real Silero: a whole
    question ends its turn and its answer begins; 1.1 s after the question the user goes
    on ("and of germany"), inside the resume window: the first part's user item and the
    answer begun to it are deleted, and one user item with the whole turn is answered."""
    question = speech_24k("what is the capital of france", "flite:awb")
    more = speech_24k("and of germany", "flite:awb")

    async def run():
        client = await connect(native_server.url)
        await client.recv()
        await client.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}})
        await client.until("session.updated")
        await stream_realtime(client, np.concatenate([silence(0.3), question, silence(1.1),
                                                      more, silence(2.5)]))
        while (await client.until("response.done", timeout_s=60))["response"]["status"] \
                != "completed":
            pass
        with contextlib.suppress(TimeoutError):  # what came after it: a turn that went on
            while True:
                await client.recv(3.0)
        return client

    client = asyncio.run(run())
    events = [r.event for r in client.events]
    kinds = [e["type"] for e in events]
    committed = [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    deleted = [e["item_id"] for e in events if e["type"] == "conversation.item.deleted"]
    answers = {e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
    statuses = [e["response"]["status"] for e in events if e["type"] == "response.done"]
    print(f"\nafterthought: responses {statuses}, deleted {len(deleted)} items")
    assert "error" not in kinds and len(committed) >= 2 and statuses[-1] == "completed"
    # every part before the last went on with the turn: its user item and answer deleted
    assert set(committed[:-1]) <= set(deleted) <= set(committed[:-1]) | answers
    assert kinds.index("conversation.item.deleted") < len(kinds) - kinds[::-1].index(
        "input_audio_buffer.committed")
