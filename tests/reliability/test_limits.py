"""Every limit and every access check of the real server refuses with a clear reason.

Missing, wrong or malformed keys (401), a full server (503, and the slot comes back
when a session ends), events over ``--max-message-kb`` (an error, the session goes
on) and frames over the websocket limit (close 1009), the input audio cap with and
without server VAD, and the idle timeout (close 1000 with the reason).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import websockets

from tests.helpers.server import append_event, connect, connect_manual, handshake, silence
from tests.reliability.helpers import metrics

pytestmark = pytest.mark.slow  # real servers on both engines

KEY = "s3cret-key"


def test_missing_wrong_or_malformed_keys_get_401_with_the_reason(make_server):
    server = make_server(api_key=KEY)
    refused = [
        {}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": KEY},
        {"Authorization": f"Bearer {KEY[:-1]}"}, {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": f"Bearer {KEY.upper()}"}, {"Authorization": "Bearer é" + KEY},
    ]

    async def run():
        results = [await handshake(server.url, h) for h in refused]
        results.append(await handshake(server.url, subprotocols=[
            "realtime", "openai-insecure-api-key.wrong"]))
        ok = [await handshake(server.url, {"Authorization": f"Bearer {KEY}"}),
              await handshake(server.url, {"Authorization": f"bearer  {KEY} "}),
              await handshake(server.url, subprotocols=[
                  "realtime", f"openai-insecure-api-key.{KEY}"])]
        return results, ok

    results, ok = asyncio.run(run())
    for headers, (status, body) in zip(refused + ["subprotocol"], results, strict=True):
        assert status == 401 and "missing or wrong API key" in body, (headers, status, body)
    assert [status for status, _ in ok] == [101, 101, 101]
    assert metrics(server.http)['voxloop_connections_refused_total{reason="auth"}'] == len(
        results)


def test_full_server_refuses_with_503_and_frees_the_slot(make_server):
    server = make_server(max_sessions=2)

    async def run():
        first, second = await connect(server.url), await connect(server.url)
        await first.recv()
        await second.recv()
        full = await handshake(server.url)
        await first.ws.close()
        deadline = time.monotonic() + 10
        while (again := await handshake(server.url))[0] != 101 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await second.ws.close()
        return full, again

    (status, body), again = asyncio.run(run())
    assert status == 503 and "server full" in body and "--max-sessions" in body
    assert again[0] == 101
    assert metrics(server.http)['voxloop_connections_refused_total{reason="max_sessions"}'] >= 1


def test_message_limits(make_server):
    server = make_server(max_message_kb=16)
    frame_limit = 4 * 16 * 1024 + 4096

    async def run():
        client = await connect(server.url)
        await client.recv()
        await client.send({"type": "input_audio_buffer.append", "event_id": "big",
                           "audio": "A" * (17 * 1024)})
        too_big = await client.until("error")
        await client.send({"type": "session.update", "session": {"instructions": "alive"}})
        alive = await client.until("session.updated")
        await client.ws.send("x" * (frame_limit + 1))
        try:
            while True:
                await client.recv(10)
        except websockets.ConnectionClosed:
            pass
        return too_big, alive, client.ws.close_code, client.ws.close_reason

    too_big, alive, code, reason = asyncio.run(run())
    assert too_big["error"]["code"] == "message_too_large"
    assert too_big["error"]["event_id"] is None or too_big["error"]["event_id"] == "big"
    assert "--max-message-kb" in too_big["error"]["message"]
    assert alive["session"]["instructions"] == "alive"
    assert code == 1009 and reason, (code, reason)


def test_input_audio_cap_with_and_without_vad(make_server, question_24k):
    """Without turn detection a full buffer refuses appends; with server VAD what is not
    speech is dropped as it comes (loud noise past the cap is no error) and only a turn
    longer than the cap is cut, with its own error."""
    server = make_server(max_buffer_s=1.0)
    noise = (np.random.default_rng(0).standard_normal(int(2.5 * 24000)) * 0.3).astype(np.float32)
    long_turn = np.concatenate([question_24k] * 3)  # one turn, longer than the cap

    async def run():
        manual = await connect_manual(server.url)
        for chunk in np.array_split(silence(1.5), 3):
            await manual.send(append_event(chunk))
        full = await manual.until("error")
        await manual.send({"type": "input_audio_buffer.commit"})
        committed = await manual.until("input_audio_buffer.committed")
        await manual.ws.close()
        vad = await connect(server.url)
        await vad.recv()
        for chunk in np.array_split(noise, 25):  # not speech: trimmed as it comes
            await vad.send(append_event(chunk))
        for chunk in np.array_split(long_turn, 60):
            await vad.send(append_event(chunk))
        vad_full = await vad.until("error", timeout_s=60)
        await vad.ws.close()
        return full, committed, vad_full

    full, committed, vad_full = asyncio.run(run())
    for error in (full, vad_full):
        assert error["error"]["code"] == "input_audio_buffer_full"
        assert "1 s" in error["error"]["message"]
    assert "turn detection is off" in full["error"]["message"]
    assert "this turn went on for" in vad_full["error"]["message"]  # the noise was no error
    assert committed["item_id"]


def test_idle_timeout_closes_with_the_reason(make_server):
    server = make_server(idle_timeout_s=0.5)

    async def run():
        client = await connect(server.url)
        await client.recv()
        try:
            while True:
                await client.recv(10)
        except websockets.ConnectionClosed:
            pass
        return client.ws.close_code, client.ws.close_reason

    code, reason = asyncio.run(run())
    assert code == 1000 and reason == "idle timeout: no client event for 0.5 s"
