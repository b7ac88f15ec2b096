"""The reliability suite's shared pieces: a real server (in this process or as a
`voxloop serve` subprocess), a spoken turn that checks its answer, /metrics as numbers."""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.realtime.conftest import (  # noqa: F401 - fixtures and helpers reused here
    ServerThread,
    cascade_engine,
    connect,
    make_server,
    silence,
    speech_24k,
    stream_realtime,
)
from voxloop.realtime.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"
ANSWER_WORD = "paris"


@pytest.fixture(scope="session")
def question_24k() -> np.ndarray:
    return speech_24k(QUESTION)


@dataclass
class TurnOutcome:
    status: str
    transcript: str
    latency_ms: float  # last question sample sent -> first answer audio received
    errors: list = field(default_factory=list)


async def spoken_turn(url: str, question: np.ndarray, paced: bool = True) -> TurnOutcome:
    """One spoken question (server VAD ends it), its answer checked against the API types."""
    client = await connect(url)
    await client.until("session.created")
    audio = np.concatenate([silence(0.3), question])
    if paced:
        sent_s = await stream_realtime(client, audio)
    else:
        from tests.realtime.conftest import append_event

        for chunk in np.array_split(audio, max(1, len(audio) // 2400)):
            await client.send(append_event(chunk))
        sent_s = time.perf_counter()
    tail = asyncio.create_task(stream_realtime(client, silence(8.0)))
    try:
        first = await client.until("response.output_audio.delta", timeout_s=120)
        latency_ms = 1000 * (client.events[-1].t - sent_s)
        done = first if first["type"] == "response.done" else await client.until(
            "response.done", timeout_s=120)
    finally:
        tail.cancel()
        await client.ws.close()
    transcript = next((r.event["transcript"] for r in client.events
                       if r.event["type"] == "response.output_audio_transcript.done"), "")
    errors = [r.event["error"] for r in client.events if r.event["type"] == "error"]
    return TurnOutcome(done["response"]["status"], transcript, latency_ms, errors)


def metrics(http: str) -> dict[str, float]:
    """``GET /metrics`` as {sample name with labels: value}."""
    with urllib.request.urlopen(http + "/metrics", timeout=30) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@pytest.fixture()
def serve_process():
    started = []

    def start(*args: str) -> ServerProcess:
        """``voxloop serve --engine cascade ARGS``: the cascade answers typed questions
        too, and its answers are known."""
        started.append(ServerProcess(["--engine", "cascade", *args]).start())
        return started[-1]

    yield start
    for p in started:
        p.kill()
