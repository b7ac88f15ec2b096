"""SIGTERM to `voxloop serve` while answers are being made and sent, on each engine.

Four sessions at the moment of the signal: one whose answer audio is streaming, one
whose spoken turn has just ended (the engine is transcribing), one idle, and one
that stopped reading with an answer queued. Checked: a new connection during the
drain is refused (the port is closed); the streaming answer finishes within
``--drain-s``; every session that reads gets close 1001 "server shutting down"; the
process exits 0 within the drain plus the close timeout, with no traceback.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import websockets

from tests.helpers.server import append_event, connect, handshake, silence
from tests.reliability.helpers import question_event, tiny_socket

pytestmark = pytest.mark.reliability_slow
DRAIN_S = 6.0
CLOSE_TIMEOUT_S = 2.0


async def until_closed(client) -> tuple[list[str], int, str]:
    try:
        while True:
            await client.recv(60)
    except websockets.ConnectionClosed:
        pass
    return client.types(), client.ws.close_code, client.ws.close_reason


def test_sigterm_during_active_responses(serve_process, engine_name, question_24k):
    server = serve_process("--drain-s", str(DRAIN_S), "--close-timeout-s", str(CLOSE_TIMEOUT_S))
    question = question_event(engine_name, question_24k)

    async def run():
        streaming, spoken, idle = [await connect(server.url) for _ in range(3)]
        for c in (streaming, spoken, idle):
            await c.until("session.created")
        stuck = await websockets.connect(server.url, sock=tiny_socket(server.url), max_queue=1)
        await stuck.send(json.dumps(question))
        await stuck.send(json.dumps({"type": "response.create"}))
        await streaming.send(question)
        await streaming.send({"type": "response.create"})
        await streaming.until("response.output_audio.delta", timeout_s=60)
        for chunk in np.array_split(np.concatenate([question_24k, silence(1.0)]), 40):
            await spoken.send(append_event(chunk))
        await spoken.until("input_audio_buffer.speech_stopped", timeout_s=60)
        t0 = time.perf_counter()
        server.proc.send_signal(15)
        await asyncio.sleep(0.5)
        try:  # the listening socket is closed at once; a handshake under way gets a 503
            refused = await handshake(server.url)
        except OSError as exc:
            refused = (0, str(exc))
        results = await asyncio.gather(*(until_closed(c) for c in (streaming, spoken, idle)))
        return refused, results, t0

    try:
        refused, results, t0 = asyncio.run(run())
    except BaseException:
        print(server.log()[-5000:])
        raise
    code = server.proc.wait(60)
    took_s = time.perf_counter() - t0
    log = server.log()
    (streaming_types, *_), *_ = results
    print(f"\nSIGTERM -> exit {code} in {took_s:.1f} s (drain {DRAIN_S:g} s); closes "
          f"{[(c, r) for _, c, r in results]}; a new connection during the drain: {refused}")
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "event=stopped" in log, log[-3000:]
    assert refused[0] == 0 or (refused[0] == 503 and "shutting down" in refused[1]), refused
    assert "response.done" in streaming_types  # the answer streaming at SIGTERM was finished
    for _, close_code, reason in results:
        assert close_code == 1001 and reason == "server shutting down"
    assert took_s < DRAIN_S + 2 * CLOSE_TIMEOUT_S + 10
