"""`voxloop serve` as a process: it starts, answers, and drains on SIGTERM with exit code 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import websockets

from tests.realtime.conftest import connect

pytestmark = pytest.mark.slow


def test_sigterm_during_a_response_closes_cleanly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxloop", "serve", "--engine", "cascade", "--port", "0",
         "--drain-s", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log_lines, url = [], None
    deadline = time.time() + 120
    while url is None and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        log_lines.append(line)
        if m := re.search(r"event=listening url=(\S+)", line):
            url = m.group(1)
    assert url, "server did not start:\n" + "".join(log_lines)

    async def run():
        client = await connect(url)
        await client.recv()
        await client.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "what can you do"}]}})
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await client.recv(30)
        return client.ws.close_code, client.ws.close_reason

    code, reason = asyncio.run(run())
    out = "".join(log_lines) + proc.stdout.read()
    assert proc.wait(30) == 0, out
    assert code == 1001 and reason == "server shutting down"
    assert "Traceback" not in out and "event=stopped" in out
