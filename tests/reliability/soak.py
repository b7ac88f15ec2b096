"""A soak run: one live session under server VAD, fed a seeded plan of room tone, noise and
speech bursts and questions at random times, faster than real time, against a real server
in this process (so the session's buffer can be read between appends).

The plan starts with a silence longer than the server's ``max_buffer_s`` (the buffer used
to fill with silence and refuse every append after it: the session went deaf). After each
question the run waits for its answer; every silence ends with a check that the server has
taken all the audio and holds no more than the prefix padding before the next VAD window.
Any ``error`` event fails the run at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tests.helpers.server import RATE_HZ, ServerThread, append_event, connect
from tests.realtime.api_types import validate_server_event
from tests.reliability.helpers import rss_bytes

CHUNK_MS = 100  # appends of 100 ms: 10x fewer events than a live client, same audio
PREFIX_PADDING_MS = 300  # the server VAD's default
# what the buffer may hold after a silence: the prefix padding, one VAD window not judged
# yet, the resampler's lag, and one append (read between the append and the trim after it)
IDLE_HELD_MS = PREFIX_PADDING_MS + 32 + 40 + CHUNK_MS
QUESTION_TAIL_S = 0.8  # room tone after a question: the VAD ends the turn after 300 ms
ANSWER_TIMEOUT_S = 180.0  # generous: the machine may be loaded


@dataclass(frozen=True)
class Segment:
    kind: str  # "silence" | "noise" | "speech" | "question"
    audio_24k: np.ndarray  # float32 [T]


@dataclass(frozen=True)
class Sounds:
    question: np.ndarray  # float32 [T] at 24 kHz: the question every answer is checked on
    bursts: tuple[np.ndarray, ...]  # short utterances that are not the question


def room_tone(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Noise far below Silero's speech threshold."""
    return (0.003 * rng.standard_normal(int(seconds * RATE_HZ))).astype(np.float32)


def soak_plan(seed: int, total_s: float, sounds: Sounds, first_silence_s: float,
              long_silence_s: tuple[float, float]) -> list[Segment]:
    """Silences (mostly 1-8 s, one in five ``long_silence_s``), each followed by a question
    (30 %), a speech burst (35 %) or a noise burst (35 %), until ``total_s`` of audio. It
    opens with ``first_silence_s`` of room tone and a question and ends with a question."""
    rng = np.random.default_rng(seed)
    segments = [Segment("silence", room_tone(first_silence_s, rng)), _question(sounds, rng)]
    audio_s = sum(len(s.audio_24k) for s in segments) / RATE_HZ
    while audio_s < total_s:
        gap_s = rng.uniform(1.0, 8.0) if rng.random() < 0.8 else rng.uniform(*long_silence_s)
        segments.append(Segment("silence", room_tone(gap_s, rng)))
        draw = rng.random()
        if draw < 0.3:
            segments.append(_question(sounds, rng))
        elif draw < 0.65:
            burst = sounds.bursts[rng.integers(len(sounds.bursts))]
            segments.append(Segment("speech", burst))
        else:
            loud = 0.2 * rng.standard_normal(int(rng.uniform(0.1, 0.6) * RATE_HZ))
            segments.append(Segment("noise", loud.astype(np.float32)))
        audio_s += sum(len(s.audio_24k) for s in segments[-2:]) / RATE_HZ
    segments += [Segment("silence", room_tone(2.0, rng)), _question(sounds, rng)]
    return segments


def _question(sounds: Sounds, rng: np.random.Generator) -> Segment:
    return Segment("question", np.concatenate([sounds.question,
                                               room_tone(QUESTION_TAIL_S, rng)]))


@dataclass
class SoakReport:
    audio_s: float = 0.0
    wall_s: float = 0.0
    questions: int = 0
    transcripts: list[str] = field(default_factory=list)  # the questions' answers, in order
    idle_held_ms: list[int] = field(default_factory=list)  # buffer after each silence
    max_held_ms: int = 0  # the most the buffer held at any check
    max_items: int = 0
    rss_warm_bytes: int = 0  # after the first answer (models loaded, first turn done)
    rss_end_bytes: int = 0
    rss_mib: list[int] = field(default_factory=list)  # after each answer
    py_blocks: list[int] = field(default_factory=list)  # Python's allocated blocks, likewise
    kinds: dict[str, int] = field(default_factory=dict)  # server events by type

    def summary(self) -> str:
        return (f"soak: {self.audio_s:.0f} s of audio in {self.wall_s:.0f} s, "
                f"{self.questions} questions answered, buffer after silences <= "
                f"{max(self.idle_held_ms)} ms (max {self.max_held_ms} ms), items <= "
                f"{self.max_items}, RSS {self.rss_warm_bytes / 2**20:.0f} -> "
                f"{self.rss_end_bytes / 2**20:.0f} MiB\n  RSS after each answer (MiB): "
                f"{self.rss_mib}\n  Python blocks: {self.py_blocks}")


class _Events:
    """Every server event (validated against the API's types; audio payloads dropped)."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.errors: list[dict] = []

    async def receive(self, ws) -> None:
        async for message in ws:
            event = json.loads(message)
            validate_server_event(event)
            if event["type"].endswith("audio.delta"):
                event.pop("delta")  # keep the run's own memory flat
            self.seen.append(event)
            if event["type"] == "error":
                self.errors.append(event["error"])

    def count(self, kind: str) -> int:
        return sum(e["type"] == kind for e in self.seen)

    async def until(self, found: Callable[[], object], what: str,
                    timeout_s: float = ANSWER_TIMEOUT_S) -> object:
        deadline = time.monotonic() + timeout_s
        while not (value := found()):
            assert not self.errors, f"error while waiting for {what}: {self.errors[0]}"
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:g} s"
            await asyncio.sleep(0.02)
        return value

    def after(self, index: int, kind: str, **match) -> tuple[int, dict] | None:
        for n in range(index, len(self.seen)):
            event = self.seen[n]
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return n, event
        return None


async def run_soak(server: ServerThread, plan: list[Segment],
                   is_answer: Callable[[str], bool]) -> SoakReport:
    """Play ``plan`` into one session; every question must get an answer ``is_answer``
    accepts. Returns what was measured; fails at the first error event."""
    report, events, t0 = SoakReport(), _Events(), time.perf_counter()
    client = await connect(server.url)
    receiver = asyncio.create_task(events.receive(client.ws))
    try:
        await events.until(lambda: events.count("session.created"), "session.created", 60)
        session = next(iter(server.server.sessions))
        sent_ms = 0
        for segment in plan:
            start_ms, step = sent_ms, CHUNK_MS * RATE_HZ // 1000
            for i in range(0, len(segment.audio_24k), step):
                await client.send(append_event(segment.audio_24k[i:i + step]))
            sent_ms += len(segment.audio_24k) * 1000 // RATE_HZ
            report.max_held_ms = max(report.max_held_ms, session.audio.buffered_ms)
            if segment.kind == "silence":
                await events.until(lambda sent_ms=sent_ms: session.audio.end_ms >= sent_ms - 1,
                                   "the server taking all the audio sent")
                report.idle_held_ms.append(session.audio.buffered_ms)
            elif segment.kind == "question":
                report.transcripts.append(await _answer(events, start_ms, is_answer))
                report.questions += 1
                report.rss_warm_bytes = report.rss_warm_bytes or rss_bytes(os.getpid())
                report.rss_mib.append(rss_bytes(os.getpid()) // 2**20)
                report.py_blocks.append(sys.getallocatedblocks())
            report.max_items = max(report.max_items, len(session.items))
        assert not events.errors, events.errors[0]
    finally:
        await client.ws.close()
        receiver.cancel()
    report.audio_s, report.wall_s = sent_ms / 1000, time.perf_counter() - t0
    report.rss_end_bytes = rss_bytes(os.getpid())
    for event in events.seen:
        kind = event["type"]
        if kind == "response.done":
            kind += ":" + event["response"]["status"]
        report.kinds[kind] = report.kinds.get(kind, 0) + 1
    return report


async def _answer(events: _Events, start_ms: int, is_answer: Callable[[str], bool]) -> str:
    """The answer to the question sent from ``start_ms`` on: the response created right
    after its turn was committed, done and completed. Returns its transcript."""
    stopped = await events.until(lambda: next(
        (e for e in events.seen if e["type"] == "input_audio_buffer.speech_stopped"
         and e["audio_end_ms"] > start_ms), None), "the end of the question's turn")
    committed = await events.until(
        lambda: events.after(0, "input_audio_buffer.committed", item_id=stopped["item_id"]),
        "the question's turn committed")
    created = await events.until(lambda: events.after(committed[0], "response.created"),
                                 "a response to the question")
    response_id = created[1]["response"]["id"]
    done = await events.until(lambda: next(
        (e for e in events.seen[created[0]:] if e["type"] == "response.done"
         and e["response"]["id"] == response_id), None), "the question's answer")
    assert done["response"]["status"] == "completed", done["response"]
    transcript = next((e["transcript"] for e in events.seen
                       if e["type"] == "response.output_audio_transcript.done"
                       and e["response_id"] == response_id), "")
    assert is_answer(transcript), transcript
    return transcript
