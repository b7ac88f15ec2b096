"""`voxloop serve` as a process: it starts, answers, and drains on SIGTERM with exit code 0."""

from __future__ import annotations

import asyncio
import signal

import pytest
import websockets

from tests.helpers.server import connect
from voxloop.realtime.server_process import ServerProcess

pytestmark = pytest.mark.slow


def test_sigterm_during_a_response_closes_cleanly():
    server = ServerProcess(["--engine", "cascade", "--drain-s", "0.2"], 120).start()

    async def run():
        client = await connect(server.url)
        await client.recv()
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "what can you do"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await client.recv(30)
        return client.ws.close_code, client.ws.close_reason

    try:
        code, reason = asyncio.run(run())
    except BaseException:
        server.kill()
        raise
    exit_code = server.wait(30)  # it was sent SIGTERM once: that must be enough
    out = server.log()
    assert exit_code == 0, out
    assert code == 1001 and reason == "server shutting down"
    assert "Traceback" not in out and "event=stopped" in out
