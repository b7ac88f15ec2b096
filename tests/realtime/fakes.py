"""A scripted engine and an in-process session harness, for fast session tests.

:class:`FakeEngine` answers every turn with the same :class:`Script`: words and
sine tones, each piece after its own delay (waited on the cancel flag, so a
cancel stops it at once), and its sessions record every call and what they
heard. :class:`Harness` drives a real :class:`Session` (with its ResponseRun and
Outbox) without a socket: client events in, server events out, each one checked
against the ``openai`` package's types after the beta renames the server makes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from tests.realtime.api_types import validate_server_event
from voxloop.audio import float_to_pcm16
from voxloop.client.files import append_event
from voxloop.realtime.engines.base import EngineOutput, Turn
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.server import ServerSettings
from voxloop.realtime.session import Session
from voxloop.realtime.wire.protocol import (
    WIRE_RATE_HZ,
    ProtocolError,
    parse_client_event,
    wire_event,
)


def tone_24k(hz: float, ms: int) -> np.ndarray:
    """A sine tone at 24 kHz, float32 ``[ms * 24]``."""
    t = np.arange(ms * WIRE_RATE_HZ // 1000) / WIRE_RATE_HZ
    return (0.25 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@dataclass(frozen=True)
class Piece:
    """One piece of a scripted answer."""

    words: str = ""  # transcript delta ("" for none)
    tone_hz: float = 440.0
    tone_ms: int = 100  # answer audio of this piece (0: words only)
    delay_s: float = 0.0  # how long making it takes (waited on the cancel flag)
    words_logprob: float | None = None  # a student's, with its first audio


@dataclass(frozen=True)
class Script:
    user_transcript: str = "what time is it"  # what the fake hears in any turn
    pieces: tuple[Piece, ...] = (Piece("It is", 440.0, 200), Piece(" noon.", 660.0, 200))
    fail_after: int | None = None  # raise after this many pieces (an engine failure)
    resumes_turns: bool = True  # resume_turn keeps the last turn (False: as the cascade)
    heard_logprob: float | None = None  # how sure its recognizer is of user_transcript

    def audio_24k(self) -> np.ndarray:
        return np.concatenate([tone_24k(p.tone_hz, p.tone_ms) for p in self.pieces])

    def transcript(self) -> str:
        return "".join(p.words for p in self.pieces)


def slow_script(pieces: int, delay_s: float, tone_ms: int = 100) -> Script:
    """An answer of many short pieces, each taking ``delay_s`` to make."""
    return Script(pieces=tuple(Piece(f" w{n}", 300.0 + 20 * n, tone_ms, delay_s)
                               for n in range(pieces)))


class FakeEngine:
    name = "fake"
    voice = "joe"

    def __init__(self, script: Script = Script(), accepts_text: bool = True,
                 follows_instructions: bool = True) -> None:
        self.script, self.accepts_text = script, accepts_text
        self.follows_instructions = follows_instructions
        self.models = {"script": "fake"}
        self.sessions: list[FakeSession] = []

    def open(self) -> FakeSession:
        self.sessions.append(FakeSession(self.script))
        return self.sessions[-1]

    def warm_up(self) -> None:
        pass


@dataclass
class FakeSession:
    """Records, in order, each call the session made and what it heard."""

    script: Script
    calls: list[str] = field(default_factory=list)  # method names, in call order
    heard: list[list[np.ndarray]] = field(default_factory=list)  # per turn: 16 kHz chunks
    turns: list[Turn] = field(default_factory=list)  # what respond was asked to answer
    pieces_made: int = 0
    closed: bool = False
    live: bool | None = None  # turn detection on, as the session last set it
    quick_turns: bool | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def heard_16k(self, turn: int = -1) -> np.ndarray:
        chunks = self.heard[turn] if self.heard else []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    def calls_but_hear(self) -> list[str]:
        return [c for c in self.calls if c != "hear"]

    def _call(self, name: str) -> None:
        with self._lock:
            self.calls.append(name)

    def new_turn(self) -> None:
        self._call("new_turn")
        self.heard.append([])

    def hear(self, audio_16k: np.ndarray) -> None:
        self._call("hear")
        self.heard[-1].append(np.array(audio_16k, np.float32))

    def pause(self) -> None:
        self._call("pause")

    def set_turn_detection(self, live: bool, quick: bool = False) -> None:
        self.live, self.quick_turns = live, quick

    def resume(self) -> None:
        self._call("resume")

    def resume_turn(self) -> bool:
        self._call("resume_turn")
        return self.script.resumes_turns

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        self._call("respond")
        self.turns.append(turn)
        if turn.audio_24k is not None:
            yield EngineOutput(user_transcript=self.script.user_transcript,
                               user_transcript_logprob=self.script.heard_logprob)
        for n, piece in enumerate(self.script.pieces):
            if cancel.wait(piece.delay_s):
                return
            if n == self.script.fail_after:
                raise RuntimeError("scripted failure")
            self.pieces_made += 1
            audio = tone_24k(piece.tone_hz, piece.tone_ms) if piece.tone_ms else None
            yield EngineOutput(audio_24k=audio, transcript_delta=piece.words,
                               words_logprob=piece.words_logprob)

    def transcribe(self, audio_24k: np.ndarray) -> str:
        self._call("transcribe")
        return self.script.user_transcript

    def close(self) -> None:
        self._call("close")
        self.closed = True


MANUAL = {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}
QUESTION_24K = tone_24k(220.0, 500)  # any audio will do for a manual turn


class Harness:
    """A Session on ``engine`` with no socket. Make it inside the running event loop."""

    def __init__(self, engine: FakeEngine, beta: bool = False, **settings) -> None:
        s = replace(ServerSettings(), **settings)
        self.engine, self.beta = engine, beta
        self.executor = ThreadPoolExecutor(4, thread_name_prefix="fake-session")
        self.outbox = Outbox(s.max_queued_audio, s.max_queued_events)
        self.session = Session(engine, self.executor, self.outbox, s.session_limits(), beta=beta)
        self.events: list[dict] = []  # every event read so far, as the client got it
        self.session.start()

    @property
    def engine_session(self) -> FakeSession:
        return self.session.engine_session

    async def send(self, event: dict | str) -> None:
        """Handle one client event as the server's receive task does: a bad one
        becomes an urgent ``error`` event and the session goes on."""
        try:
            await self.session.handle(parse_client_event(
                event if isinstance(event, str) else json.dumps(event)))
        except ProtocolError as exc:
            self.outbox.put_urgent(exc.event())

    async def append(self, samples_24k: np.ndarray, chunk_ms: int = 40) -> None:
        step = chunk_ms * WIRE_RATE_HZ // 1000
        for i in range(0, len(samples_24k), step):
            await self.send(append_event(samples_24k[i:i + step]))

    async def next(self, timeout_s: float = 5.0) -> dict:
        """The next event the client would get (validated); skips what beta lacks."""
        while True:
            event = wire_event(await asyncio.wait_for(self.outbox.get(), timeout_s), self.beta)
            if event is not None:
                validate_server_event(event, self.beta)
                self.events.append(event)
                return event

    async def until(self, kind: str, timeout_s: float = 5.0) -> dict:
        """The next event of type ``kind``; an unexpected ``error`` fails at once."""
        while (event := await self.next(timeout_s))["type"] != kind:
            assert event["type"] != "error", event["error"]
        return event

    async def drain(self, settle_s: float = 0.05) -> list[dict]:
        """Every event sent within ``settle_s`` from now."""
        out = []
        while True:
            try:
                out.append(await self.next(settle_s))
            except TimeoutError:
                return out

    async def close(self) -> None:
        await self.session.close()
        self.executor.shutdown(wait=True)


def run_session(test, engine: FakeEngine | None = None, beta: bool = False, manual: bool = True,
        **settings):
    """Run ``test(harness)`` in a fresh event loop, past ``session.created`` (and, if
    ``manual``, a ``session.update`` that turns turn detection off); return the harness."""

    async def main() -> Harness:
        h = Harness(engine or FakeEngine(), beta=beta, **settings)
        try:
            assert (await h.next())["type"] == "session.created"
            if manual:
                await h.send(MANUAL)
                await h.until("session.updated")
            await test(h)
        finally:
            await h.close()
        return h

    return asyncio.run(main())


async def manual_turn(h: Harness, samples_24k: np.ndarray = QUESTION_24K) -> dict:
    """Append audio and commit it (turn detection off); the ``committed`` event."""
    await h.append(samples_24k)
    await h.send({"type": "input_audio_buffer.commit"})
    return await h.until("input_audio_buffer.committed")


def audio_event(samples_24k: np.ndarray) -> dict:
    """``conversation.item.create`` of a user audio item."""
    return {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user", "content": [{
            "type": "input_audio",
            "audio": base64.b64encode(float_to_pcm16(samples_24k)).decode()}]}}
