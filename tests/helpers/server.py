"""A real server on loopback (real Silero, a real engine) and a checking test client.

Shared by the realtime, client and reliability tests. Its fixtures (the engines,
``server``, ``make_server``) reach every test folder through ``pytest_plugins`` in
tests/conftest.py; import the helpers (``ServerThread``, ``connect``, ...) from here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pytest
import websockets

from tests.realtime.api_types import validate_server_event
from voxloop.audio import pcm16_to_float, resample
from voxloop.client.files import append_event, paced_chunks

RATE_HZ = 24000
CHUNK_MS = 40


@pytest.fixture(scope="session")
def cascade_engine():
    from voxloop.realtime.engines.cascade import CascadeEngine

    engine = CascadeEngine()
    engine.warm_up()
    return engine


@pytest.fixture(scope="session")
def native_engine():
    from voxloop.realtime.engines.native import NativeEngine

    engine = NativeEngine()
    engine.warm_up()
    yield engine
    engine.batcher.shutdown()


@pytest.fixture(scope="session")
def hybrid_engine(native_engine, cascade_engine):
    """The default engine, made of the two above (nothing more is loaded)."""
    from voxloop.realtime.engines.hybrid import HybridEngine

    return HybridEngine(native_engine, cascade_engine)


class ServerThread:
    """A RealtimeServer running on its own event loop in a background thread."""

    def __init__(self, engine, **settings) -> None:
        from voxloop.realtime.server import RealtimeServer, ServerSettings

        self.server = RealtimeServer(engine, ServerSettings(**{"port": 0, **settings}))
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(60), "server did not start"
        self.url = f"ws://127.0.0.1:{self.server.port}/v1/realtime"
        self.http = f"http://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextmanager
def servers_of(engine) -> Iterator[Callable[..., ServerThread]]:
    """``make(**settings)`` starts a ServerThread on ``engine``; all are stopped at the end."""
    servers: list[ServerThread] = []

    def make(**settings) -> ServerThread:
        servers.append(ServerThread(engine, **settings))
        return servers[-1]

    try:
        yield make
    finally:
        for s in servers:
            s.stop()


@pytest.fixture(scope="module")
def server(cascade_engine):
    s = ServerThread(cascade_engine)
    yield s
    s.stop()


@pytest.fixture()
def make_server(cascade_engine):
    with servers_of(cascade_engine) as make:
        yield make


@dataclass
class Received:
    event: dict
    t: float  # perf_counter at arrival


@dataclass
class Client:
    """Test client: every event the server sends is validated against openai's types."""

    ws: websockets.ClientConnection
    beta: bool = False
    events: list[Received] = field(default_factory=list)

    async def send(self, event: dict) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self, timeout_s: float = 30.0) -> dict:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
        validate_server_event(event, self.beta)  # raises if it breaks the API's types
        self.events.append(Received(event, time.perf_counter()))
        return event

    async def until(self, kind: str, timeout_s: float = 60.0) -> dict:
        deadline = time.perf_counter() + timeout_s
        while True:
            event = await self.recv(max(0.1, deadline - time.perf_counter()))
            if event["type"] == kind:
                return event

    def types(self) -> list[str]:
        return [r.event["type"] for r in self.events]

    def answer_audio(self, response_id: str | None = None) -> np.ndarray:
        deltas = [r.event["delta"] for r in self.events
                  if r.event["type"] in ("response.output_audio.delta", "response.audio.delta")
                  and (response_id is None or r.event["response_id"] == response_id)]
        return pcm16_to_float(b"".join(base64.b64decode(d) for d in deltas))


async def connect(url: str, beta: bool = False, **kwargs) -> Client:
    headers = {"OpenAI-Beta": "realtime=v1"} if beta else {}
    ws = await websockets.connect(url, additional_headers=headers, max_size=2**24, **kwargs)
    return Client(ws, beta)


async def connect_manual(url: str) -> Client:
    """A session with turn detection off (manual turns), past ``session.updated``."""
    client = await connect(url)
    await client.recv()  # session.created
    await client.send({"type": "session.update", "session": {"audio": {"input": {
        "turn_detection": None}}}})
    await client.until("session.updated")
    return client


async def handshake(url: str, headers: dict | None = None,
                    subprotocols=None) -> tuple[int, str]:
    """(HTTP status, body) of a websocket handshake; 101 when it was accepted."""
    try:
        ws = await websockets.connect(url, additional_headers=headers or {},
                                      subprotocols=subprotocols)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode()
    await ws.close()
    return 101, ""


def speech_24k(text: str, voice: str = "festival:slt-hts") -> np.ndarray:
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize(text, voice)
    return resample(samples, rate_hz, RATE_HZ)


async def stream_realtime(client: Client, samples: np.ndarray, chunk_ms: int = CHUNK_MS) -> float:
    """Send ``samples`` at real-time pace; return the perf_counter when the last chunk left."""
    async for _, chunk in paced_chunks(samples, chunk_ms):
        await client.send(append_event(chunk))
    return time.perf_counter()


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE_HZ), np.float32)
