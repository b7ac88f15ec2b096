"""One response: run the engine session in a worker thread and relay what it makes.

The engine session yields into an asyncio queue from its thread; this task turns each
piece into protocol events. ``cancel`` sets the engine's stop flag, removes the
response's queued audio from the outbox and finishes with status ``cancelled``
at once, without waiting for the engine's current step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor

from voxloop.audio import float_to_pcm16
from voxloop.realtime.engines.base import EngineOutput, EngineSession, Turn
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.wire import events
from voxloop.realtime.wire.events import ContentRef
from voxloop.realtime.wire.ids import new_id
from voxloop.realtime.wire.items import Item
from voxloop.realtime.wire.protocol import pcm_format

log = logging.getLogger("voxloop.realtime")
_DONE = object()


class ResponseRun:
    def __init__(self, engine: EngineSession, turn: Turn, outbox: Outbox, beta: bool,
                 conversation_id: str, voice: str, on_user_transcript: Callable[[str], None],
                 on_item: Callable[[Item], None], lead_ms: int,
                 on_done: Callable[[], None] = lambda: None, metadata: dict | None = None
                 ) -> None:
        self.id = new_id("resp")
        self.engine, self.turn, self.outbox, self.beta = engine, turn, outbox, beta
        self.conversation_id, self.voice = conversation_id, voice
        self.item: Item | None = None
        self.status = "in_progress"
        self.cancel_reason: str | None = None
        self.first_audio_s: float | None = None  # perf_counter when the first delta was queued
        self._stop = threading.Event()  # for the engine's thread
        self._cancelled = asyncio.Event()  # for this task's pacing
        self._queue: asyncio.Queue = asyncio.Queue()
        self._engine_done = asyncio.Event()  # the engine's respond returned (or failed)
        self._on_user_transcript, self._on_item = on_user_transcript, on_item
        self._on_done = on_done  # the response is over for the client: before response.done
        self.timings_ms: dict = {}
        self.lead_ms = lead_ms  # audio sent at most this far ahead of real time
        self.metadata = metadata  # response.create's, echoed so a client can match its events

    def resource(self, status: str | None = None, details: dict | None = None) -> dict:
        output = [self.item.wire(self.beta)] if self.item else []
        body = {"id": self.id, "object": "realtime.response", "status": status or self.status,
                "status_details": details, "output": output,
                "conversation_id": self.conversation_id, "metadata": self.metadata}
        if self.beta:
            body.update(modalities=["text", "audio"], voice=self.voice,
                        output_audio_format="pcm16")
        else:
            body.update(output_modalities=["audio"], audio={"output": {
                "format": pcm_format(), "voice": self.voice}})
        return body

    def cancel(self, reason: str) -> None:
        """Stop now: no more audio from this response reaches the client."""
        if self.status != "in_progress" or self.cancel_reason:
            return
        self.cancel_reason = reason
        self._stop.set()
        self._cancelled.set()
        self.outbox.drop_audio(self.id)
        self._queue.put_nowait(_DONE)

    async def run(self, executor: Executor) -> str:
        """Relay the engine's output; return the final status."""
        self.outbox.put(events.response_created(self.resource()))
        loop = asyncio.get_running_loop()
        worker = loop.run_in_executor(executor, self._work, loop)
        try:
            while True:
                piece = await self._queue.get()
                if piece is _DONE or self.cancel_reason:
                    break
                if isinstance(piece, Exception):
                    raise piece
                await self._pace()
                if self.cancel_reason:
                    break
                self._relay(piece)
            status = "cancelled" if self.cancel_reason else "completed"
        except Exception as exc:  # the engine failed: tell the client, keep the session
            log.exception("event=engine_error response=%s", self.id)
            self.outbox.put(events.error("engine_error", f"the engine failed: {exc}",
                                         error_type="server_error"))
            status = "failed"
        finally:
            self._stop.set()
        self._finish(status)
        if status != "cancelled":
            await worker
        return status

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """Runs in a worker thread: iterate the engine until done or stopped."""
        put = self._queue.put_nowait
        try:
            if self._stop.is_set():  # cancelled before it began: the engine is not asked
                return
            for piece in self.engine.respond(self.turn, self._stop):
                if self._stop.is_set():
                    break
                loop.call_soon_threadsafe(put, piece)
        except Exception as exc:  # noqa: BLE001 - relayed to the event loop
            loop.call_soon_threadsafe(put, exc)
        finally:
            loop.call_soon_threadsafe(put, _DONE)
            loop.call_soon_threadsafe(self._engine_done.set)

    async def engine_done(self, timeout_s: float) -> bool:
        """Wait until the engine has returned from this response, ``timeout_s`` at most;
        whether it has."""
        try:
            await asyncio.wait_for(self._engine_done.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _pace(self) -> None:
        """Keep the audio sent at most ``lead_ms`` ahead of real time, so a barge-in
        cuts the answer where the listener is rather than after all of it was sent."""
        if self.first_audio_s is None or self.item is None:
            return
        ahead_s = self.item.audio_ms / 1000 - (time.perf_counter() - self.first_audio_s)
        wait_s = ahead_s - self.lead_ms / 1000
        if wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cancelled.wait(), wait_s)

    def _relay(self, piece: EngineOutput) -> None:
        self.timings_ms.update(piece.timings_ms)
        if piece.user_transcript is not None:
            self._on_user_transcript(piece.user_transcript)
        if piece.audio_24k is None and not piece.transcript_delta:
            return
        if self.item is None:
            self._open_item()
        ref, put = self._ref(), self.outbox.put
        if piece.transcript_delta:
            self.item.add_piece(piece.transcript_delta)
            put(events.response_output_audio_transcript_delta(ref, piece.transcript_delta))
        if piece.audio_24k is not None and len(piece.audio_24k):
            pcm = float_to_pcm16(piece.audio_24k)
            self.item.audio.extend(pcm)
            if self.first_audio_s is None:
                self.first_audio_s = time.perf_counter()
            put(events.response_output_audio_delta(ref, pcm))

    def _open_item(self) -> None:
        self.item = Item(new_id("item"), "assistant", audio=bytearray(), status="in_progress")
        self._on_item(self.item)
        wire, put = self.item.wire(self.beta), self.outbox.put
        put(events.response_output_item_added(self.id, wire))
        put(events.conversation_item_added(wire, previous_item_id=None))
        put(events.response_content_part_added(self._ref(), self.item.text))

    def _finish(self, status: str) -> None:
        self.status = status
        put = self.outbox.put
        if self.item is not None:
            self.item.status = "completed" if status == "completed" else "incomplete"
            ref, text, wire = self._ref(), self.item.text, self.item.wire(self.beta)
            put(events.response_output_audio_done(ref))
            put(events.response_output_audio_transcript_done(ref, text))
            put(events.response_content_part_done(ref, text))
            put(events.response_output_item_done(self.id, wire))
            put(events.conversation_item_done(wire, previous_item_id=None))
        self._on_done()  # a client may create the next response as soon as it reads done
        details = {"type": "cancelled", "reason": self.cancel_reason} if status == "cancelled" \
            else ({"type": "failed"} if status == "failed" else None)
        put(events.response_done(self.resource(status, details)))

    def _ref(self) -> ContentRef:
        return ContentRef(self.id, self.item.id)
