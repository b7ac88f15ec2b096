"""Live mode: the microphone to the server, the answer to the speaker, until Ctrl-C.

One :class:`LiveClient` keeps the sound card open for its whole life and (re)connects
the websocket with exponential backoff when the server goes away. Per connection,
as in the websockets "patterns" doc, a send task (mic blocks -> echo handling ->
``input_audio_buffer.append``) and a receive task (server events ->
:class:`Conversation`) run until the first ends. A view task redraws the screen ten
times a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field

from voxloop.client.audio_io import AudioIO, AudioSettings, MicBlock
from voxloop.client.connect import connect_error
from voxloop.client.conversation import Conversation
from voxloop.client.echo import SILENT_DBFS, EchoMeter, EchoSettings, dbfs, make_echo_control
from voxloop.client.files import append_event
from voxloop.client.jitter import JitterBuffer, JitterSettings
from voxloop.client.view import ViewState
from voxloop.errors import VoxloopError

SESSION_UPDATE = {"type": "session.update", "session": {
    "type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}}


@dataclass(frozen=True)
class LiveSettings:
    view: str = field(default="auto", metadata={
        "choices": ("auto", "rich", "plain"),
        "help": "rich: a live panel; plain: one line per event; auto: rich in a terminal"})
    reconnect_first_s: float = field(default=0.5, metadata={
        "help": "wait before the first reconnect; doubles each failed try"})
    reconnect_max_s: float = field(default=8.0, metadata={"help": "longest wait between tries"})
    stats_json: str | None = field(default=None, metadata={
        "help": "write the session's measurements (turns, latency, underruns, echo) "
        "here as JSON on exit"})
    dump_audio: str | None = field(default=None, metadata={
        "help": "save the mic, the speaker reference and the audio sent (24 kHz), and per "
        "mic block whether the reference was trusted and the playback level ahead of it, to "
        "this .npz on exit, to look into echo problems (replay them through the canceller)"})


class LiveClient:
    def __init__(self, url: str, api_key: str | None, audio: AudioSettings | None = None,
                 echo: EchoSettings | None = None, jitter: JitterSettings | None = None,
                 settings: LiveSettings | None = None) -> None:
        self.url, self.api_key, self.settings = url, api_key, settings or LiveSettings()
        self.jitter = JitterBuffer(jitter or JitterSettings())
        self.conversation = Conversation(self.jitter)
        self.echo = make_echo_control(echo or EchoSettings())
        self.echo_meter = EchoMeter()
        self.audio = AudioIO(audio or AudioSettings(), self.jitter, self._on_mic_block)
        self.connection = "connecting"
        self.reconnects = 0
        self.mic_dbfs = SILENT_DBFS
        self.ready_s: float | None = None  # perf_counter when first listening
        self._dump: list[tuple] | None = [] if self.settings.dump_audio else None
        self._mic: asyncio.Queue[MicBlock] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, view) -> None:
        """Talk until cancelled (Ctrl-C); the sound card is closed on the way out."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # SIGTERM ends it like ^C
            self._loop.add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
        self._mic = asyncio.Queue(maxsize=50)  # 1 s at 20 ms blocks; oldest dropped
        self.audio.start()
        drawer = asyncio.create_task(self._draw(view))
        try:
            await self._connect_forever()
        finally:
            drawer.cancel()
            self.audio.close()
            self._save_dump()
            self.conversation.refresh()
            view.update(self.view_state())

    def view_state(self) -> ViewState:
        c = self.conversation
        state = c.state if self.connection.startswith("connected") else "offline"
        return ViewState(self.connection, state, self.mic_dbfs, self.echo.name,
                         self.jitter.underruns, c.barge_ins, list(c.turns), list(c.log))

    def summary(self) -> dict:
        c = self.conversation
        input_ms, output_ms = self.audio.latency_ms
        return {"url": self.url, "echo": self.echo.name, "turns": [t.summary() for t in c.turns],
                "underruns": self.jitter.underruns, "barge_ins": c.barge_ins,
                "server_errors": c.errors, "reconnects": self.reconnects,
                "device_latency_ms": {"input": round(input_ms), "output": round(output_ms)},
                "device_status": sorted(set(self.audio.status_flags)),
                "reference_resyncs": self.audio.reference.resyncs,
                "reference_unaligned_blocks": self.audio.reference.unaligned_blocks,
                "echo_guarded_blocks": getattr(self.echo, "guarded_blocks", 0),
                "echo_leaking_blocks": getattr(self.echo, "leaking_blocks", 0),
                **self.echo_meter.summary()}

    # -- connection ------------------------------------------------------------------

    async def _connect_forever(self) -> None:
        import websockets

        wait_s, attempt = self.settings.reconnect_first_s, 0
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        while True:
            attempt += 1
            try:
                # close_timeout: a busy server must not hold up Ctrl-C for the default
                # 10 s close handshake
                async with websockets.connect(self.url, additional_headers=headers,
                                              max_size=2**24, open_timeout=5,
                                              close_timeout=1) as ws:
                    wait_s, attempt = self.settings.reconnect_first_s, 0
                    await self._converse(ws)
                reason = "the server closed the connection" + (
                    f" ({ws.close_code}: {ws.close_reason})" if ws.close_reason else
                    f" ({ws.close_code})" if ws.close_code else "")
            except websockets.InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status not in (408, 429):  # retrying cannot help
                    raise connect_error(self.url, exc) from exc
                reason = str(connect_error(self.url, exc))  # 503 "server full": try again
            except websockets.InvalidURI as exc:
                raise VoxloopError(f"bad --url {self.url}: {exc}") from exc
            except (OSError, asyncio.TimeoutError, websockets.ConnectionClosed,
                    websockets.InvalidMessage) as exc:  # (cut off mid-handshake: retry)
                reason = str(exc) or type(exc).__name__
            self.conversation.reset_connection()
            self.reconnects += 1
            self.connection = f"reconnecting in {wait_s:.1f} s (try {attempt + 1})"
            self.conversation.note(f"{reason}; {self.connection}")
            await asyncio.sleep(wait_s)
            wait_s = min(self.settings.reconnect_max_s, 2 * wait_s)

    async def _converse(self, ws) -> None:
        self.conversation.reset_connection()
        self.echo.reset()
        await ws.send(json.dumps(SESSION_UPDATE))
        while not self._mic.empty():  # audio captured while disconnected is stale
            self._mic.get_nowait()
        self.connection = f"connected to {self.url}"
        self.conversation.note(self.connection)
        if self.ready_s is None:
            self.ready_s = time.perf_counter()
        tasks = [asyncio.create_task(self._send_mic(ws)), asyncio.create_task(self._receive(ws))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise ConnectionClosed and the like
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self, ws) -> None:
        async for message in ws:
            for reply in self.conversation.on_event(json.loads(message)):
                await ws.send(json.dumps(reply))

    async def _send_mic(self, ws) -> None:
        while True:
            block = await self._mic.get()
            sent = self.echo.process(block.samples, block.far, block.aligned,
                                     block.ahead_dbfs)
            if dbfs(block.far) > SILENT_DBFS + 10:  # the assistant was playing
                self.echo_meter.add(block.samples, sent)
            self.mic_dbfs = dbfs(block.samples)
            self.conversation.clock.sent(len(sent), block.captured_s)
            if self._dump is not None:
                self._dump.append((block.samples, block.far, sent, block.aligned,
                                   block.ahead_dbfs))
            await ws.send(json.dumps(append_event(sent)))

    def _save_dump(self) -> None:
        if self._dump:
            import numpy as np

            mic, far, sent, aligned, ahead = zip(*self._dump, strict=True)
            np.savez(self.settings.dump_audio, mic=np.concatenate(mic),
                     far=np.concatenate(far), sent=np.concatenate(sent),
                     block_samples=np.array([len(m) for m in mic]), aligned=np.array(aligned),
                     ahead_dbfs=np.array(ahead, np.float32), rate_hz=24000)

    # -- audio thread -> event loop ------------------------------------------------------

    def _on_mic_block(self, block: MicBlock) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._queue_mic, block)

    def _queue_mic(self, block: MicBlock) -> None:
        if self._mic.full():
            self._mic.get_nowait()
        self._mic.put_nowait(block)

    async def _draw(self, view) -> None:
        while True:
            self.conversation.refresh()
            view.update(self.view_state())
            await asyncio.sleep(0.1)
