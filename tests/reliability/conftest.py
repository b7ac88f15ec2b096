"""The reliability suite's shared pieces: a real server (in this process or as a
`voxloop serve` subprocess), a spoken turn that checks its answer, /metrics as numbers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
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
    silence,
    speech_24k,
    stream_realtime,
)

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"
ANSWER_WORD = "paris"


@pytest.fixture(scope="session")
def question_24k() -> np.ndarray:
    return speech_24k(QUESTION)


@pytest.fixture()
def make_server(cascade_engine):  # noqa: F811 - the fixture imported above
    servers = []

    def make(**settings) -> ServerThread:
        servers.append(ServerThread(cascade_engine, **settings))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


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


class ServeProcess:
    """``voxloop serve --engine cascade`` as a subprocess (its own RSS, threads, exit code
    and log). The cascade answers typed questions too, and its answers are known."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxloop", "serve", "--port", "0", "--engine", "cascade",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.url = None
        deadline = time.time() + 180
        while self.url is None and time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if m := re.search(r"event=listening url=(\S+)", line):
                self.url = m.group(1)
        assert self.url, "server did not start:\n" + "".join(self.lines)
        self.http = self.url.replace("ws://", "http://").rsplit("/v1", 1)[0]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return "".join(self.lines)

    def terminate(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture()
def serve_process():
    started = []

    def start(*args: str) -> ServeProcess:
        started.append(ServeProcess(*args))
        return started[-1]

    yield start
    for p in started:
        p.kill()
