"""Bad input, access control and limits against the real server: clear errors, no lost session."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request

import pytest
import websockets

from tests.helpers.server import append_event, connect, connect_manual, handshake, silence

pytestmark = pytest.mark.slow  # a real server on the cascade engine

BAD_EVENTS = [  # (raw text, expected error code)
    ("{not json", "invalid_json"),
    ("[1, 2, 3]", "invalid_event"),
    (json.dumps({"event_id": "e1"}), "missing_field"),
    (json.dumps({"type": "no.such.event", "event_id": "e2"}), "unknown_event"),
    (json.dumps({"type": "input_audio_buffer.append", "event_id": "e3"}), "missing_field"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": 5, "event_id": "e4"}),
     "invalid_type"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "@@not base64@@",
                 "event_id": "e5"}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append",
                 "audio": base64.b64encode(b"abc").decode(), "event_id": "e6"}), "invalid_audio"),
    (json.dumps({"type": "conversation.item.truncate", "item_id": "x", "content_index": 0,
                 "audio_end_ms": -5, "event_id": "e7"}), "invalid_value"),
    (json.dumps({"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0,
                 "audio_end_ms": 10, "event_id": "e8"}), "item_not_found"),
    (json.dumps({"type": "conversation.item.delete", "item_id": "nope", "event_id": "e9"}),
     "item_not_found"),
    (json.dumps({"type": "response.cancel", "event_id": "e10"}), "response_cancel_not_active"),
    (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e11"}),
     "input_audio_buffer_commit_empty"),
    (json.dumps({"type": "response.create", "event_id": "e12"}), "invalid_value"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "format": {"type": "audio/pcmu"}}}}, "event_id": "e13"}), "unsupported_value"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": {"type": "server_vad", "threshold": 7}}}}, "event_id": "e14"}),
     "invalid_value"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "eagerness": "x"}}}}, "event_id": "e15"}),
     "invalid_value"),
    (json.dumps({"type": "conversation.item.create", "item": {"type": "function_call"},
                 "event_id": "e16"}), "unsupported_value"),
    (json.dumps({"type": "conversation.item.create", "item": {"role": "user", "content": []},
                 "event_id": "e17"}), "invalid_value"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    # API fields this server cannot honour: refused, never silently dropped
    (json.dumps({"type": "session.update", "session": {"type": "transcription"},
                 "event_id": "e18"}), "unsupported_value"),
    (json.dumps({"type": "session.update", "session": {"audio": False}, "event_id": "e19"}),
     "invalid_type"),
    (json.dumps({"type": "session.update", "session": {"audio": {"output": {"speed": 1.5}}},
                 "event_id": "e20"}), "unsupported_value"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": {"type": "server_vad", "eagerness": "high"}}}}, "event_id": "e21"}),
     "invalid_value"),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}},
        "event_id": "e22"}), "unsupported_value"),
    (json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]},
                 "event_id": "e23"}), "unsupported_value"),
    (json.dumps({"type": "response.create", "response": {"conversation": "none"},
                 "event_id": "e24"}), "unsupported_value"),
]


def test_each_bad_event_gets_an_error_and_the_session_goes_on(server):
    async def run():
        client = await connect(server.url)
        await client.recv()
        errors = []
        for raw, _ in BAD_EVENTS:
            await client.ws.send(raw)
            errors.append(await client.until("error", timeout_s=10))
        await client.ws.send(b"\x00\x01binary")
        errors.append(await client.until("error", timeout_s=10))
        await client.send({"type": "session.update", "session": {"instructions": "still here"}})
        updated = await client.until("session.updated")
        await client.ws.close()
        return errors, updated

    errors, updated = asyncio.run(run())
    for (raw, code), error in zip(BAD_EVENTS + [("binary", "binary_frame")], errors, strict=True):
        assert error["error"]["code"] == code, (raw[:80], error)
        assert error["error"]["message"]
        if raw.startswith("{") and '"event_id"' in raw:
            assert error["error"]["event_id"] == json.loads(raw)["event_id"]
    assert updated["session"]["instructions"] == "still here"


def test_oversized_message_and_buffer_cap(make_server):
    server = make_server(max_message_kb=64, max_buffer_s=1.0)

    async def run():
        client = await connect_manual(server.url)
        await client.send({"type": "input_audio_buffer.append", "event_id": "big",
                           "audio": "A" * (100 * 1024)})
        too_big = await client.until("error")
        for _ in range(3):  # 3 x 0.5 s into a 1 s buffer: the third is refused
            await client.send(append_event(silence(0.5)))
        full = await client.until("error")
        await client.send({"type": "input_audio_buffer.clear"})
        await client.until("input_audio_buffer.cleared")
        await client.ws.close()
        return too_big, full

    too_big, full = asyncio.run(run())
    assert too_big["error"]["code"] == "message_too_large"
    assert too_big["error"]["event_id"] == "big"  # found without parsing the whole event
    assert full["error"]["code"] == "input_audio_buffer_full" and "1 s" in full["error"]["message"]


def _status(url: str, headers: dict | None = None, subprotocols=None) -> tuple[int, str]:
    return asyncio.run(handshake(url, headers, subprotocols))


def test_api_key(make_server):
    server = make_server(api_key="s3cret")
    status, body = _status(server.url)
    assert status == 401 and "Authorization: Bearer" in body
    assert _status(server.url, {"Authorization": "Bearer wrong"})[0] == 401
    assert _status(server.url, {"Authorization": "Bearer s3cret"})[0] == 101
    assert _status(server.url, subprotocols=["realtime", "openai-insecure-api-key.s3cret"])[0] \
        == 101
    assert _status(server.url, subprotocols=["realtime", "openai-insecure-api-key.nope"])[0] \
        == 401


def test_max_sessions_and_idle_timeout(make_server):
    server = make_server(max_sessions=1, idle_timeout_s=1.0)

    async def run():
        first = await connect(server.url)
        await first.recv()
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(server.url)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await first.recv(5)
        return refused.value.response, first.ws.close_reason

    response, reason = asyncio.run(run())
    assert response.status_code == 503 and b"--max-sessions" in response.body
    assert "idle timeout" in reason


def test_health_metrics_and_unknown_path(server):
    with urllib.request.urlopen(server.http + "/healthz") as r:
        health = json.load(r)
    assert health["status"] == "ok" and health["engine"] == "cascade"
    with urllib.request.urlopen(server.http + "/metrics") as r:
        text = r.read().decode()
    for name in ("voxloop_sessions_open", "voxloop_turns_total", "voxloop_first_audio_seconds",
                 "voxloop_errors_total"):
        assert name in text
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(server.http + "/v2/elsewhere")
    assert missing.value.code == 404
    missing.value.close()


def test_every_error_event_sent_is_counted(server):
    """`voxloop_errors_total` counts the error events the clients get, by code, whichever
    part of the server sent them."""
    def count(code: str) -> float:
        with urllib.request.urlopen(server.http + "/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(f'voxloop_errors_total{{code="{code}"}}'):
                    return float(line.split()[-1])
        return 0.0

    async def run():
        client = await connect(server.url)
        await client.recv()
        await client.ws.send("{not json")
        await client.until("error", timeout_s=10)
        # a note the session sends itself (the scripted cascade follows no instructions)
        await client.send({"type": "session.update", "session": {"instructions": "Be brief."}})
        await client.until("error", timeout_s=10)
        await client.ws.close()

    before = count("invalid_json"), count("instructions_not_followed")
    asyncio.run(run())
    assert (count("invalid_json"), count("instructions_not_followed")) == \
        (before[0] + 1, before[1] + 1)
