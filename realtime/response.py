"""One response: run the engine in a worker thread and relay what it makes.

The engine yields into an asyncio queue from its thread; this task turns each
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
from voxloop.realtime.engines.base import Engine, EngineOutput, Turn
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.wire.items import Item
from voxloop.realtime.wire.protocol import encode_audio, error_event, new_id, pcm_format

log = logging.getLogger("voxloop.realtime")
_DONE = object()


class ResponseRun:
    def __init__(self, engine: Engine, turn: Turn, outbox: Outbox, beta: bool,
                 conversation_id: str, voice: str, on_user_transcript: Callable[[str], None],
                 on_item: Callable[[Item], None], lead_ms: int = 500) -> None:
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
        self._on_user_transcript, self._on_item = on_user_transcript, on_item
        self.timings_ms: dict = {}
        self.lead_ms = lead_ms  # audio sent at most this far ahead of real time

    def resource(self, status: str | None = None, details: dict | None = None) -> dict:
        output = [self.item.wire(self.beta)] if self.item else []
        body = {"id": self.id, "object": "realtime.response", "status": status or self.status,
                "status_details": details, "output": output,
                "conversation_id": self.conversation_id}
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
        self._send("response.created", response=self.resource())
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
            self.outbox.put(error_event("engine_error", f"the engine failed: {exc}",
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
            for piece in self.engine.respond(self.turn, self._stop):
                if self._stop.is_set():
                    break
                loop.call_soon_threadsafe(put, piece)
        except Exception as exc:  # noqa: BLE001 - relayed to the event loop
            loop.call_soon_threadsafe(put, exc)
        finally:
            loop.call_soon_threadsafe(put, _DONE)

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
        ids = self._ids()
        if piece.transcript_delta:
            self.item.add_piece(piece.transcript_delta)
            self._send("response.output_audio_transcript.delta", **ids,
                       delta=piece.transcript_delta)
        if piece.audio_24k is not None and len(piece.audio_24k):
            pcm = float_to_pcm16(piece.audio_24k)
            self.item.audio.extend(pcm)
            if self.first_audio_s is None:
                self.first_audio_s = time.perf_counter()
            self._send("response.output_audio.delta", **ids, delta=encode_audio(pcm))

    def _open_item(self) -> None:
        self.item = Item(new_id("item"), "assistant", audio=bytearray(), status="in_progress")
        self._on_item(self.item)
        self._send("response.output_item.added", response_id=self.id, output_index=0,
                   item=self.item.wire(self.beta))
        self._send("conversation.item.added", previous_item_id=None,
                   item=self.item.wire(self.beta))
        self._send("response.content_part.added", **self._ids(), part=self._part())

    def _finish(self, status: str) -> None:
        self.status = status
        if self.item is not None:
            self.item.status = "completed" if status == "completed" else "incomplete"
            ids = self._ids()
            self._send("response.output_audio.done", **ids)
            self._send("response.output_audio_transcript.done", **ids, transcript=self.item.text)
            self._send("response.content_part.done", **ids, part=self._part())
            self._send("response.output_item.done", response_id=self.id, output_index=0,
                       item=self.item.wire(self.beta))
            self._send("conversation.item.done", previous_item_id=None,  # GA only: see GA_ONLY
                       item=self.item.wire(self.beta))
        details = {"type": "cancelled", "reason": self.cancel_reason} if status == "cancelled" \
            else ({"type": "failed"} if status == "failed" else None)
        self._send("response.done", response=self.resource(status, details))

    def _ids(self) -> dict:
        return {"response_id": self.id, "item_id": self.item.id, "output_index": 0,
                "content_index": 0}

    def _part(self) -> dict:
        return {"type": "audio", "transcript": self.item.text}

    def _send(self, kind: str, **fields) -> None:
        self.outbox.put({"type": kind, "event_id": new_id("event"), **fields})
