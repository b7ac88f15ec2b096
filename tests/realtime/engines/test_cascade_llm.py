"""The cascade with an OpenAI-compatible LLM (tests/helpers/fake_llm.py on loopback), through
a real server: the session's instructions are the LLM's system prompt, the reply is
streamed and spoken sentence by sentence, so the first sentence is heard while the rest
of the reply does not exist yet; a cancelled answer speaks nothing of what comes later."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.fake_llm import fake_chat_server
from tests.helpers.server import ServerThread, connect
from voxloop.distill.teachers.llm import LLMSettings

pytestmark = pytest.mark.slow  # loads Whisper

FIRST = "The capital of France is Paris."
PIECES = ("The capital", " of France is Paris.", " It lies", " on the Seine.")  # held after 3
GUIDE = "Answer like a tour guide."
TYPED = {"type": "conversation.item.create", "item": {
    "type": "message", "role": "user",
    "content": [{"type": "input_text", "text": "what is the capital of france"}]}}


@pytest.fixture(scope="module")
def llm():
    with fake_chat_server(PIECES, hold_after=3, hold_s=30) as server:
        yield server


@pytest.fixture(scope="module")
def server(llm):
    from voxloop.realtime.engines.cascade import CascadeEngine, CascadeSettings

    engine = CascadeEngine(CascadeSettings(voice="flite:kal16"),
                           llm_settings=LLMSettings(backend="openai", url=llm.url,
                                                    timeout_s=120))
    s = ServerThread(engine)
    yield s
    s.stop()


def test_first_sentence_is_heard_before_the_reply_exists(server, llm):
    llm.release.clear()

    async def run():
        client = await connect(server.url)
        created = (await client.recv())["session"]
        assert created["audio"]["output"]["voice"] == "kal16"  # the voice the cascade speaks
        await client.send({"type": "session.update", "session": {"instructions": GUIDE}})
        await client.until("session.updated")
        await client.send(TYPED)
        await client.send({"type": "response.create"})
        first = await client.until("response.output_audio_transcript.delta", timeout_s=120)
        await client.until("response.output_audio.delta", timeout_s=60)
        held = not llm.release.is_set()  # the LLM has not written the rest yet
        llm.release.set()
        done = await client.until("response.done", timeout_s=120)
        await client.ws.close()
        return first, held, done, client

    first, held, done, client = asyncio.run(run())
    assert held and first["delta"] == FIRST
    assert done["response"]["status"] == "completed"
    transcript = next(r.event["transcript"] for r in client.events
                      if r.event["type"] == "response.output_audio_transcript.done")
    assert transcript == "".join(PIECES)
    assert not [r for r in client.events if r.event["type"] == "error"]
    assert not llm.held_out
    body = llm.requests[-1]
    assert body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": GUIDE}
    assert body["messages"][-1]["content"] == "what is the capital of france"


def test_a_cancelled_answer_speaks_nothing_more(server, llm):
    llm.release.clear()

    async def run():
        client = await connect(server.url)
        await client.recv()
        await client.send(TYPED)
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta", timeout_s=120)
        await client.send({"type": "response.cancel"})
        done = await client.until("response.done", timeout_s=60)
        llm.release.set()  # the rest comes: nobody may speak it
        await asyncio.sleep(1.0)
        await client.ws.close()
        return done, client

    done, client = asyncio.run(run())
    assert done["response"]["status"] == "cancelled"
    after = client.events.index(next(r for r in client.events
                                     if r.event["type"] == "response.done"))
    assert not [r for r in client.events[after + 1:] if r.event["type"].startswith("response.")]
    transcripts = [r.event["delta"] for r in client.events
                   if r.event["type"] == "response.output_audio_transcript.delta"]
    assert transcripts == [FIRST]
    assert llm.requests[-1]["messages"][0]["content"] != GUIDE  # a new session: no instructions


def test_punctuation_is_written_not_spoken_and_nothing_heard_is_not_answered(monkeypatch):
    """A sentence of punctuation alone ("...") has no words to say: the TTS is not asked
    (piper says nothing, festival crashes on it), the rest of the answer goes on; an
    empty question (a cough the ASR heard as nothing) asks no LLM."""
    import threading

    import voxloop.realtime.engines.cascade as cascade
    from voxloop.realtime.engines.base import Turn
    from voxloop.realtime.engines.cascade import CascadeEngine, CascadeSettings

    said, synthesize = [], cascade.synthesize
    monkeypatch.setattr(cascade, "synthesize",
                        lambda text, voice: said.append(text) or synthesize(text, voice))
    with fake_chat_server(("Hmm.", " ...", " It is four.")) as chat:
        engine = CascadeEngine(CascadeSettings(voice="flite:kal16"),
                               llm_settings=LLMSettings(backend="openai", url=chat.url,
                                                        timeout_s=30))
        session = engine.open()
        outputs = list(session.respond(Turn(text="what is two plus two"), threading.Event()))
        assert "".join(o.transcript_delta for o in outputs) == "Hmm. ... It is four."
        assert said == ["Hmm.", "It is four."]  # the TTS never asked to say "..."
        assert list(session.respond(Turn(text="  "), threading.Event())) == []
        assert len(chat.requests) == 1
