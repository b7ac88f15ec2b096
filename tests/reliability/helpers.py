"""The reliability suite's shared pieces: the question and how each engine's answer is
judged, a spoken turn that checks its answer, /metrics as numbers, a socket that
holds almost nothing unread."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from tests.helpers.server import append_event, connect, silence, stream_realtime
from voxloop.audio import to_pcm16

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "What is the capital of France?"
ANSWER_WORD = "paris"
# the question typed: the cascade answers it (the native engine answers speech only)
TYPED_QUESTION = {"type": "conversation.item.create", "item": {
    "type": "message", "role": "user",
    "content": [{"type": "input_text", "text": QUESTION.lower().rstrip("?")}]}}


def question_event(engine, question_24k: np.ndarray) -> dict:
    """A user message ``engine`` (an engine or its name) answers: typed for the cascade,
    spoken for the native and the hybrid engine, whose student answers speech (an
    ``input_audio`` part holding the whole question)."""
    if getattr(engine, "name", engine) == "cascade":
        return TYPED_QUESTION
    audio = base64.b64encode(to_pcm16(question_24k).tobytes()).decode()
    return {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{"type": "input_audio", "audio": audio}]}}


def answered(engine_name: str, transcript: str) -> bool:
    """Is ``transcript`` an answer to QUESTION? The cascade's is known (Paris); the small
    student's is often wrong (it says Dublin), so for the native engine any words do:
    these tests are about the server's behaviour under stress, not the answer's quality
    (the hybrid's student answers these spoken questions too)."""
    if engine_name == "cascade":
        return ANSWER_WORD in transcript.lower()
    return bool(transcript.strip())


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


def wait_for_metric(http: str, name: str, value: float, timeout_s: float = 30) -> float:
    deadline = time.monotonic() + timeout_s
    while (now := metrics(http)[name]) != value and time.monotonic() < deadline:
        time.sleep(0.1)
    return now


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def tiny_socket(url: str) -> socket.socket:
    """A connected TCP socket that holds very little unread data (SO_RCVBUF 4 KiB)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    sock.setblocking(False)
    return sock
