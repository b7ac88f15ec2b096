"""`voxloop serve` as a process: it starts, answers, and drains on SIGTERM with exit code 0;
by default on the engine that answers best, which /healthz and the log name with its models."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request

import pytest
import websockets

from tests.helpers.processes import gone_within, start_and_kill
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


def test_a_server_whose_starter_is_killed_stops_by_itself():
    """A bench or test killed by a signal cannot stop the server it started: the server
    sees it gone and stops as on SIGTERM."""
    pid = start_and_kill(
        "import time; from voxloop.realtime.server_process import ServerProcess; "
        "server = ServerProcess(['--engine', 'cascade'], 120).start(); "
        "print(server.pid, flush=True); time.sleep(600)")
    assert gone_within(pid, 60), f"voxloop serve (pid {pid}) outlived the process that started it"


def test_the_default_engine_is_the_hybrid_and_says_what_it_runs():
    """The default is the hybrid (realtime/cli.py says why): /healthz and the start-up log
    name it and the models of both engines it runs."""
    with ServerProcess([], 180) as server:
        health, log = _health(server), server.log()
    assert health["engine"] == "hybrid"
    models = health["models"]
    assert {k: models[k] for k in ("asr", "llm", "tts")} == {
        "asr": "whisper:tiny.en", "llm": "scripted", "tts": "piper:joe"}
    assert models["student"].endswith("models/voxloop-student")
    assert "event=engine_ready engine=hybrid asr=whisper:tiny.en llm=scripted tts=piper:joe " \
        "student=" in log


def test_the_cascade_says_what_it_runs():
    with ServerProcess(["--engine", "cascade"], 120) as server:
        health = _health(server)
    assert health["engine"] == "cascade"
    assert health["models"] == {"asr": "whisper:tiny.en", "llm": "scripted", "tts": "piper:joe"}


def test_the_native_engine_names_its_student_and_codec():
    with ServerProcess(["--engine", "native"], 120) as server:
        health = _health(server)
    assert health["engine"] == "native"
    assert health["models"]["student"].endswith("models/voxloop-student")
    assert "voxloop-codec-16k" in health["models"]["codec"]


def _health(server: ServerProcess) -> dict:
    with urllib.request.urlopen(server.http + "/healthz", timeout=30) as response:
        return json.loads(response.read())


def test_a_server_that_exits_or_hangs_at_start_is_a_clear_error_not_a_hang():
    from voxloop.errors import VoxloopError

    with pytest.raises(VoxloopError, match=r"did not start \(it exited\)"):
        ServerProcess(["--engine", "no-such-engine"]).start()
    t0 = time.monotonic()
    with pytest.raises(VoxloopError, match=r"no listening line in 0.2 s"):
        ServerProcess(["--engine", "cascade"], start_timeout_s=0.2).start()  # still loading
    assert time.monotonic() - t0 < 30  # its deadline held without a line to read
