"""Session fields the server used to accept and then ignore (issue 17, part 3): a voice it
does not have, tools, and instructions, on the fake engine (no socket, no models)."""

from __future__ import annotations

import pytest

from tests.realtime.api_types import server_event_types
from tests.realtime.fakes import FakeEngine, Harness, manual_turn, run_session

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "the weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module", autouse=True)
def _loaded_once():
    server_event_types(beta=False)
    server_event_types(beta=True)


def _ga_voice(voice: str) -> dict:
    return {"type": "session.update", "session": {"type": "realtime",
                                                  "audio": {"output": {"voice": voice}}}}


def test_only_the_engines_voice_is_accepted():
    async def test(h: Harness):
        await h.send(_ga_voice("alloy"))
        error = (await h.next())["error"]
        assert error["code"] == "unsupported_value"
        assert error["param"] == "session.audio.output.voice"
        assert "'alloy' is not available" in error["message"] and "'joe'" in error["message"]
        assert h.session.config.voice == "joe"
        await h.send(_ga_voice("joe"))
        updated = await h.until("session.updated")
        assert updated["session"]["audio"]["output"]["voice"] == "joe"
        await manual_turn(h)
        await h.send({"type": "response.create", "response": {"audio": {"output": {
            "voice": "shimmer"}}}})
        assert (await h.until("error"))["error"]["param"] == "response.audio.output.voice"
        assert h.session.response is None  # refused before anything started

    h = run_session(test)
    created = h.events[0]["session"]
    assert created["audio"]["output"]["voice"] == "joe"  # the engine's, from the start


def test_beta_clients_get_the_same_answer():
    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"voice": "alloy"}})
        error = (await h.next())["error"]
        assert error["code"] == "unsupported_value" and error["param"] == "session.voice"
        await h.send({"type": "session.update", "session": {"voice": "joe"}})
        assert (await h.until("session.updated"))["session"]["voice"] == "joe"

    run_session(test, beta=True)


def test_tools_are_refused_with_a_clear_error():
    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {
            "instructions": "use the tool", "tools": [WEATHER_TOOL], "tool_choice": "auto"}})
        error = (await h.next())["error"]
        assert error["code"] == "unsupported_value" and error["param"] == "session.tools"
        assert "tools are not supported" in error["message"]
        assert h.session.config.instructions == ""  # the update was not applied
        await h.send({"type": "session.update", "session": {"tools": []}})
        await h.until("session.updated")
        await manual_turn(h)
        await h.send({"type": "response.create", "response": {"tools": [WEATHER_TOOL]}})
        error = (await h.until("error"))["error"]  # (after the turn's events, in order)
        assert error["param"] == "response.tools" and h.session.response is None

    run_session(test)


def test_instructions_reach_an_engine_that_follows_them():
    engine = FakeEngine(follows_instructions=True)

    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"instructions": "Be brief."}})
        await h.until("session.updated")
        await manual_turn(h)
        await h.send({"type": "response.create"})
        await h.until("response.done")
        await h.send({"type": "response.create",
                      "response": {"instructions": "Answer in French."}})
        await h.until("response.done")
        assert not [e for e in await h.drain() if e["type"] == "error"]

    h = run_session(test, engine)
    assert [t.instructions for t in h.engine_session.turns] == ["Be brief.",
                                                                 "Answer in French."]
    assert not [e for e in h.events if e["type"] == "error"]


def test_an_engine_that_cannot_follow_instructions_says_so_once():
    engine = FakeEngine(follows_instructions=False)

    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"instructions": "Be brief."}})
        updated = await h.until("session.updated")
        assert updated["session"]["instructions"] == "Be brief."  # stored and echoed
        note = (await h.next())["error"]
        assert note["code"] == "instructions_not_followed" and note["param"] == "instructions"
        assert "the fake engine cannot follow instructions" in note["message"]
        assert "--llm openai" in note["message"]
        await h.send({"type": "session.update", "session": {"instructions": "Be long."}})
        await h.until("session.updated")
        await manual_turn(h)
        await h.send({"type": "response.create", "response": {"instructions": "Be French."}})
        await h.until("response.done")
        await h.drain()

    h = run_session(test, engine)
    assert [e["type"] for e in h.events].count("error") == 1


def _text_item(text: str, role: str = "user", **event) -> dict:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "conversation.item.create", **event,
            "item": {"type": "message", "role": role, "content": [{"type": part, "text": text}]}}


def test_previous_item_id_places_the_item_and_the_last_user_message_is_answered():
    engine = FakeEngine(follows_instructions=True)

    async def test(h: Harness):
        await h.send(_text_item("first"))
        first = (await h.until("conversation.item.added"))["item"]["id"]
        await h.send(_text_item("last"))
        await h.until("conversation.item.added")
        await h.send(_text_item("inserted", previous_item_id=first))
        added = await h.until("conversation.item.added")
        assert added["previous_item_id"] == first
        await h.send(_text_item("opening", role="system", previous_item_id="root"))
        assert (await h.until("conversation.item.added"))["previous_item_id"] is None
        await h.send({"type": "response.create"})
        await h.until("response.done")

    h = run_session(test, engine)
    texts = [i.text for i in h.session.items.values()]
    assert texts[:4] == ["opening", "first", "inserted", "last"]  # then the answer
    turn = h.engine_session.turns[0]
    assert turn.text == "last"  # the latest user message in the conversation's order
    assert [m["content"] for m in turn.history] == ["opening", "first", "inserted"]


def test_response_metadata_comes_back_with_the_response():
    async def test(h: Harness):
        await manual_turn(h)
        await h.send({"type": "response.create", "response": {"metadata": {"topic": "t1"}}})
        created = await h.until("response.created")
        done = await h.until("response.done")
        assert created["response"]["metadata"] == done["response"]["metadata"] == {"topic": "t1"}
        await h.send({"type": "response.create", "response": {"conversation": "none"}})
        error = (await h.until("error"))["error"]
        assert error["param"] == "response.conversation" and "out-of-band" in error["message"]

    run_session(test)
