"""The OpenAI-compatible backend streams (``stream: true``) and takes instructions as its
system prompt; the scripted teacher does neither (against tests/helpers/fake_llm.py)."""

from __future__ import annotations

import pytest

from tests.helpers.fake_llm import fake_chat_server
from voxloop.distill.teachers.llm import (
    DEFAULT_SYSTEM_PROMPT,
    LLMSettings,
    follows_instructions,
    load_llm,
    reply_pieces,
)
from voxloop.errors import VoxloopError

PIECES = ("Paris", " is the capital.", " It has", " many museums.")


def _llm(server):
    return load_llm(LLMSettings(backend="openai", url=server.url, timeout_s=30))


def test_pieces_arrive_before_the_reply_is_whole():
    with fake_chat_server(PIECES, hold_after=2) as server:
        pieces = _llm(server).stream_reply([], "what is the capital of france",
                                           instructions="Answer like a tour guide.")
        first = [next(pieces), next(pieces)]
        assert first == list(PIECES[:2]) and not server.release.is_set()  # the rest waits
        server.release.set()
        assert first + list(pieces) == list(PIECES)
        body = server.requests[0]
        assert body["stream"] is True
        assert body["messages"][0] == {"role": "system", "content": "Answer like a tour guide."}
        assert body["messages"][-1] == {"role": "user", "content": "what is the capital of france"}


def test_instructions_replace_the_default_system_prompt():
    with fake_chat_server(PIECES) as server:
        llm = _llm(server)
        assert llm.reply([], "hi", instructions="Be terse.") == "".join(PIECES)
        assert llm.reply([], "hi") == "".join(PIECES)
        systems = [body["messages"][0]["content"] for body in server.requests]
        assert systems == ["Be terse.", DEFAULT_SYSTEM_PROMPT]
        assert all("stream" not in body for body in server.requests)


def test_an_error_in_the_middle_of_a_stream_is_clear():
    with fake_chat_server(PIECES) as server:
        server.stream_body = (b'data: {"choices": [{"delta": {"content": "Par"}}]}\n\n'
                              b'data: {"error": {"message": "model overloaded"}}\n\n')
        pieces = _llm(server).stream_reply([], "hi")
        assert next(pieces) == "Par"
        with pytest.raises(VoxloopError, match="failed in the middle of its reply.*overloaded"):
            next(pieces)


def test_an_endpoint_that_does_not_stream_gives_one_piece():
    with fake_chat_server(PIECES) as server:
        server.ignores_stream = True  # a JSON body whatever the request asked
        assert list(_llm(server).stream_reply([], "hi")) == ["".join(PIECES)]
        assert server.requests[0]["stream"] is True
    with fake_chat_server(PIECES) as server:
        server.stream_body = (b": keep-alive\n\nretry: 100\n\n"
                              b'data: {"choices": [{"delta": {"content": "Hi."}}]}\n\n'
                              b"data: [DONE]\n\n")
        assert list(_llm(server).stream_reply([], "hi")) == ["Hi."]  # comments, fields skipped


@pytest.mark.parametrize(("body", "says"), [
    (b"data: [DONE]\n\n", "replied with no text"),  # (e.g. all its tokens spent thinking)
    (b'error: {"message": "the request exceeds the available context size"}\n\n'
     b"data: [DONE]\n\n", "failed in its reply: .*context size"),  # llama.cpp's form
    (b'data: {"choices": [{"delta": {"content": "Hello the"}}]}\n\n', "without \\[DONE\\]"),
])
def test_a_stream_that_says_nothing_or_stops_short_is_an_error_not_silence(body, says):
    with fake_chat_server(PIECES) as server:
        server.stream_body = body
        with pytest.raises(VoxloopError, match=says):
            list(_llm(server).stream_reply([], "hi"))


def test_only_the_openai_backend_follows_instructions(assistant):
    with fake_chat_server(PIECES) as server:
        assert follows_instructions(_llm(server))
    assert not follows_instructions(assistant)
    pieces = list(reply_pieces(assistant, [], "what is the capital of france",
                               instructions="Answer in French."))
    assert len(pieces) == 1 and "Paris" in pieces[0]  # the scripted answer, whole
