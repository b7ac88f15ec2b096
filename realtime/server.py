"""The websocket server: ``/v1/realtime`` (OpenAI Realtime), ``/healthz``, ``/metrics``
and the browser client at ``/`` (:mod:`voxloop.realtime.web`).

One handler per connection with a receive task and a send task; the first to
finish cancels the other (the websockets "patterns" page). Authentication and
the session limit are checked before the upgrade, so a refused client gets a
plain HTTP answer that says why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voxloop.errors import VoxloopError
from voxloop.realtime import web
from voxloop.realtime.auth import authorized, header_values
from voxloop.realtime.engines.base import Engine
from voxloop.realtime.input_audio import InputAudio
from voxloop.realtime.metrics import ServerMetrics
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.semantic_turns import end_of_turn_model
from voxloop.realtime.session import Session, SessionLimits
from voxloop.realtime.turns import TurnDetector
from voxloop.realtime.wire import events
from voxloop.realtime.wire.protocol import (
    API_KEY_SUBPROTOCOL,
    BETA_HEADER,
    BETA_VALUE,
    ProtocolError,
    event_id_in,
    parse_client_event,
    wire_event,
)
from voxloop.realtime.wire.session_config import (
    TURN_DETECTION_TYPES,
    SessionConfig,
    TurnDetection,
    default_turn_detection,
)

log = logging.getLogger("voxloop.realtime")
REALTIME_PATH = "/v1/realtime"
# a process id: the server drains and stops once that process is no longer its parent
# (``ServerProcess`` sets it, so a bench or test killed by a signal leaves no server behind)
STOP_WITH_PARENT_ENV = "VOXLOOP_STOP_WITH_PARENT"
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"


@dataclass(frozen=True)
class ServerSettings:
    """The server's settings and limits, the one home of their defaults (the CLI is
    built from them; sessions get theirs through :meth:`session_limits`)."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8765, metadata={"help": "port (0: any free port)"})
    api_key: str | None = field(default=None, metadata={
        "help": "require this key (Authorization: Bearer KEY); default: $VOXLOOP_API_KEY "
                "if set, else no key"})
    max_sessions: int = field(default=16, metadata={"help": "concurrent sessions at most"})
    turn_detection: str = field(default="semantic_vad", metadata={
        "choices": TURN_DETECTION_TYPES,
        "help": "a new session's turn detection (a client changes it with session.update): "
                "server_vad = Silero and a fixed 300 ms of silence; semantic_vad = Silero and "
                "a wait the end-of-turn model sets (short when the question is complete, up "
                "to the eagerness's cap when it is not)"})
    max_message_kb: int = field(default=1024, metadata={
        "help": "largest client event accepted (KiB); larger ones get an error event"})
    max_buffer_s: float = field(default=60.0, metadata={
        "help": "uncommitted input audio kept per session (seconds): with server VAD the "
                "longest turn (silence between turns is dropped as it comes), without it "
                "what an append may fill before a commit or clear"})
    max_items: int = field(default=200, metadata={
        "help": "conversation items kept per session; past this the oldest are forgotten"})
    idle_timeout_s: float = field(default=300.0, metadata={
        "help": "close a session after this long without a client event"})
    output_lead_ms: int = field(default=500, metadata={
        "help": "answer audio is sent at most this far ahead of real time, so a barge-in "
                "stops it where the listener is"})
    drain_s: float = field(default=10.0, metadata={
        "help": "on SIGTERM, time active responses get to finish"})
    workers: int = field(default=32, metadata={
        "help": "threads for model work (VAD, encoding, the engine; a streaming response "
                "holds one while it waits for its next piece, so allow two per session)"})
    max_queued_audio: int = field(default=500, metadata={
        "help": "events waiting for a client past which its audio deltas are dropped (it is "
                "told with an output_audio_dropped error)"})
    max_queued_events: int = field(default=2000, metadata={
        "help": "events waiting for a client at most; past this the connection is closed "
                "(1008): the client is not reading"})
    ping_interval_s: float = field(default=20.0, metadata={
        "help": "websocket keepalive ping interval"})
    ping_timeout_s: float = field(default=20.0, metadata={
        "help": "close a connection whose pong is this late"})
    close_timeout_s: float = field(default=5.0, metadata={
        "help": "a closing handshake the client does not finish in this time is cut"})

    def check(self) -> None:
        """Limits that would break every session, and an empty key, refused at start (a
        clear error, before any model loads)."""
        positive = ("max_sessions", "max_message_kb", "max_buffer_s", "max_items",
                    "idle_timeout_s", "workers", "max_queued_audio", "max_queued_events")
        wrong = [f"--{name.replace('_', '-')} {getattr(self, name)}" for name in positive
                 if getattr(self, name) <= 0]
        if wrong:
            raise VoxloopError(f"{', '.join(wrong)}: must be above 0")
        if self.max_queued_audio >= self.max_queued_events:
            raise VoxloopError(f"--max-queued-audio {self.max_queued_audio} must be below "
                               f"--max-queued-events {self.max_queued_events} (past it audio "
                               "is dropped; past events the client is cut off)")
        if self.api_key is not None and not self.api_key.strip():
            raise VoxloopError("--api-key (or VOXLOOP_API_KEY) is empty: give a key, or leave "
                               "it out for a server without one")

    def session_limits(self) -> SessionLimits:
        return SessionLimits(max_buffer_s=self.max_buffer_s, max_items=self.max_items,
                             output_lead_ms=self.output_lead_ms)


class RealtimeServer:
    def __init__(self, engine: Engine, settings: ServerSettings = ServerSettings()) -> None:
        self.engine, self.settings = engine, settings
        self.metrics = ServerMetrics()
        self.metrics.queued_events.set_function(lambda: sum(len(s.outbox) for s in self.sessions))
        self.executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="voxloop-model")
        self.sessions: set[Session] = set()
        self._server = None
        self._stopping = False

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        s = self.settings
        # load Silero and scipy's resampler now, not on the event loop in the first session
        TurnDetector(TurnDetection())
        if s.turn_detection == "semantic_vad":  # its model too (else on first use)
            await asyncio.get_running_loop().run_in_executor(self.executor, end_of_turn_model)
        InputAudio(s.max_buffer_s)
        self._server = await serve(
            self._handle, s.host, s.port, process_request=self._process_request,
            select_subprotocol=_select_subprotocol, max_size=4 * s.max_message_kb * 1024 + 4096,
            ping_interval=s.ping_interval_s, ping_timeout=s.ping_timeout_s,
            close_timeout=s.close_timeout_s, server_header="voxloop")
        log.info("event=listening url=ws://%s:%d%s engine=%s page=http://%s:%d/", s.host,
                 self.port, REALTIME_PATH, self.engine.name, s.host, self.port)

    async def serve_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then drain and return (exit code 0)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        parent = os.environ.get(STOP_WITH_PARENT_ENV, "")
        watcher = asyncio.create_task(_stop_when_orphaned(int(parent), stop)) \
            if parent.isdigit() else None
        await self.start()
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, give active responses ``drain_s`` to finish, close the rest."""
        self._stopping = True
        self._server.close(close_connections=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.drain_s
        while any(s.response for s in self.sessions) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(*(self._close(ws, 1001, "server shutting down")
                               for ws in list(self._server.connections)), return_exceptions=True)
        await self._server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("event=stopped")

    # -- HTTP before the upgrade ---------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path.rstrip("/")
        if path == "/healthz":
            body = json.dumps({"status": "stopping" if self._stopping else "ok",
                               "engine": self.engine.name,
                               "models": getattr(self.engine, "models", {}),
                               "sessions": len(self.sessions)})
            return _response(connection, HTTPStatus.OK, body + "\n", "application/json")
        if path == "/metrics":
            return _response(connection, HTTPStatus.OK, self.metrics.render().decode(),
                             "text/plain; version=0.0.4; charset=utf-8")
        if web.is_page_path(path):
            return web.page_response(path, request, self._page_info())
        if path != REALTIME_PATH:
            return _response(connection, HTTPStatus.NOT_FOUND, f"not found: the realtime "
                             f"websocket is at {REALTIME_PATH}; also /healthz, /metrics and "
                             "the browser client at /\n")
        if self.settings.api_key and not authorized(request, self.settings.api_key):
            self.metrics.refused.labels("auth").inc()
            return _response(connection, HTTPStatus.UNAUTHORIZED, "missing or wrong API key: send "
                             "'Authorization: Bearer KEY' (or the subprotocol "
                             f"'{API_KEY_SUBPROTOCOL}KEY')\n")
        if self._stopping:
            return _response(connection, HTTPStatus.SERVICE_UNAVAILABLE, "server shutting down\n")
        if len(self.sessions) >= self.settings.max_sessions:
            self.metrics.refused.labels("max_sessions").inc()
            return _response(connection, HTTPStatus.SERVICE_UNAVAILABLE, "server full: "
                             f"{self.settings.max_sessions} sessions are open "
                             "(--max-sessions); try again later\n")
        return None

    def _page_info(self) -> web.PageInfo:
        return web.PageInfo(self.engine.name, self.settings.api_key, len(self.sessions),
                            self.settings.max_sessions, self._stopping)

    # -- one connection ------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        beta = BETA_VALUE in {v.strip() for v in request.headers.get_all(BETA_HEADER)} or \
            BETA_SUBPROTOCOL in header_values(request, "Sec-WebSocket-Protocol")
        model = parse_qs(urlsplit(request.path).query).get("model", ["voxloop"])[0]
        s = self.settings
        outbox = Outbox(s.max_queued_audio, s.max_queued_events,
                        on_drop=self.metrics.dropped_audio.inc)
        session = Session(self.engine, self.executor, outbox, s.session_limits(), beta=beta,
                          config=SessionConfig(
                              model=model[:200],
                              turn_detection=default_turn_detection(s.turn_detection)),
                          metrics=self.metrics)
        self.sessions.add(session)
        self.metrics.sessions.inc()
        self.metrics.sessions_open.inc()
        log.info("event=session_open session=%s beta=%s peer=%s", session.id, beta,
                 ws.remote_address)
        session.start()
        tasks = [asyncio.create_task(self._receive(ws, session)),
                 asyncio.create_task(self._send(ws, outbox, beta)),
                 asyncio.create_task(self._close_on_overflow(ws, outbox))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
            self.sessions.discard(session)
            self.metrics.sessions_open.dec()
            log.info("event=session_close session=%s code=%s", session.id, ws.close_code)

    async def _receive(self, ws: ServerConnection, session: Session) -> None:
        limit = self.settings.max_message_kb * 1024
        while True:
            try:
                message = await asyncio.wait_for(ws.recv(), self.settings.idle_timeout_s)
            except TimeoutError:
                await self._close(ws, 1000, f"idle timeout: no client event for "
                                  f"{self.settings.idle_timeout_s:g} s")
                return
            except ConnectionClosed:
                return
            event: dict = {}
            try:
                if len(message) > limit:
                    raise ProtocolError("message_too_large", f"event of {len(message)} bytes is "
                                        f"over the {limit}-byte limit (--max-message-kb); split "
                                        "audio into smaller appends", event_id_in(message))
                event = parse_client_event(message)
                await session.handle(event)
            except ProtocolError as exc:
                self._error(session.outbox, exc.event())
            except Exception:  # noqa: BLE001 - one bad event must not end the session
                log.exception("event=internal_error session=%s", session.id)
                self._error(session.outbox, events.error(
                    "internal_error", "the server failed on this event; the session goes on",
                    event.get("event_id"), error_type="server_error"))

    def _error(self, outbox: Outbox, event: dict) -> None:
        outbox.put_urgent(event)  # (counted as it is sent: every error event is)

    async def _send(self, ws: ServerConnection, outbox: Outbox, beta: bool) -> None:
        told = 0  # audio deltas dropped that the client was told about
        try:
            while (event := await outbox.get()) is not None:
                if outbox.dropped > told:
                    await self._send_event(ws, _dropped_audio_event(outbox.dropped - told))
                    told = outbox.dropped
                if (event := wire_event(event, beta)) is not None:
                    await self._send_event(ws, event)
        except ConnectionClosed:
            return

    async def _send_event(self, ws: ServerConnection, event: dict) -> None:
        if event["type"] == "error":  # every error event sent, by code (the engine's too)
            self.metrics.errors.labels(event["error"]["code"]).inc()
        await ws.send(json.dumps(event))

    async def _close_on_overflow(self, ws: ServerConnection, outbox: Outbox) -> None:
        """A client that lets more than ``max_queued_events`` pile up is not reading: cut it."""
        await outbox.overflowed.wait()
        self.metrics.errors.labels("client_not_reading").inc()
        log.warning("event=client_not_reading peer=%s queued=%d", ws.remote_address, len(outbox))
        await self._close(ws, 1008, f"client not reading: more than "
                          f"{self.settings.max_queued_events} events waiting to be sent")

    async def _close(self, ws: ServerConnection, code: int, reason: str) -> None:
        """Close with ``code`` and ``reason``; a client that does not read its close frame
        (a full socket) is cut after ``close_timeout_s`` instead of holding the server."""
        try:
            await asyncio.wait_for(ws.close(code, reason), self.settings.close_timeout_s + 1)
        except TimeoutError:
            ws.transport.abort()


def _dropped_audio_event(count: int) -> dict:
    return events.error("output_audio_dropped", f"{count} audio deltas were dropped because the "
                        "client was not reading fast enough", error_type="server_error")


def _select_subprotocol(connection: ServerConnection, offered) -> str | None:
    return "realtime" if "realtime" in offered else None


def _response(connection: ServerConnection, status: HTTPStatus, body: str,
              content_type: str = "text/plain; charset=utf-8") -> Response:
    response = connection.respond(status, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = content_type
    return response


async def _stop_when_orphaned(parent_pid: int, stop: asyncio.Event, every_s: float = 0.5
                              ) -> None:
    """Set ``stop`` once this process's parent is no longer ``parent_pid`` (it exited, and
    the server was handed to init), as SIGTERM would."""
    while os.getppid() == parent_pid:
        await asyncio.sleep(every_s)
    log.info("event=parent_exited pid=%d", parent_pid)
    stop.set()
