"""One client session: the protocol state machine, free of any socket code.

The server's receive task calls :meth:`Session.handle` with each parsed client
event; everything the session says goes into its :class:`Outbox`. Model work
(VAD, the engine) runs on the executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass

from voxloop.audio import pcm16_to_float
from voxloop.realtime.engines.base import Engine, Listener, Turn
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.response import ResponseRun
from voxloop.realtime.turns import TurnDetector
from voxloop.realtime.wire.items import Item, item_from_client
from voxloop.realtime.wire.protocol import (
    BYTES_PER_MS,
    BYTES_PER_SAMPLE,
    WIRE_RATE_HZ,
    ProtocolError,
    audio_ms,
    decode_audio,
    new_id,
)
from voxloop.realtime.wire.session_config import SessionConfig

log = logging.getLogger("voxloop.realtime")
MIN_COMMIT_MS = 100  # as OpenAI: a shorter buffer cannot be committed


@dataclass(frozen=True)
class SessionLimits:
    max_buffer_s: float = 60.0  # uncommitted input audio kept at most
    max_items: int = 200  # oldest items are forgotten past this
    output_lead_ms: int = 500  # answer audio is sent at most this far ahead of real time


class Session:
    def __init__(self, engine: Engine, executor: Executor, outbox: Outbox, beta: bool = False,
                 config: SessionConfig = SessionConfig(), limits: SessionLimits = SessionLimits(),
                 metrics=None) -> None:
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.engine, self.executor, self.outbox, self.beta = engine, executor, outbox, beta
        self.config, self.limits, self.metrics = config, limits, metrics
        self.items: OrderedDict[str, Item] = OrderedDict()
        self.buffer = bytearray()  # uncommitted pcm16 input since _buffer_start_ms
        self._buffer_start_ms = 0
        self._input_bytes = 0  # all input audio ever appended
        self._detector = self._new_detector(config)
        self._speech_item_id: str | None = None
        self.response: ResponseRun | None = None
        self._tasks: set[asyncio.Task] = set()
        self._turn_end_s: float | None = None
        self._listener: Listener | None = None  # the engine's live ear, made at first speech
        self._heard_ms = 0  # input audio the listener has heard, up to here
        self._listened_item_id: str | None = None  # the user item the listener heard

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._send("session.created", session=self.config.wire(self.id, self.beta))

    async def close(self) -> None:
        if self.response:
            self.response.cancel("client_cancelled")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()

    async def handle(self, event: dict) -> None:
        """Act on one parsed client event; ProtocolError means an ``error`` event."""
        handler = getattr(self, "_on_" + event["type"].replace(".", "_"))
        await handler(event, event.get("event_id"))

    def _new_detector(self, config: SessionConfig) -> TurnDetector | None:
        if config.turn_detection is None:
            return None
        return TurnDetector(config.turn_detection, start_ms=audio_ms(self._input_bytes))

    # -- session and input audio -------------------------------------------------------
    async def _on_session_update(self, event: dict, event_id) -> None:
        config = self.config.updated(event["session"], event_id)
        if config.turn_detection != self.config.turn_detection:
            self._detector = self._new_detector(config)
            self._speech_item_id = None
        self.config = config
        self._send("session.updated", session=config.wire(self.id, self.beta))

    async def _on_input_audio_buffer_append(self, event: dict, event_id) -> None:
        pcm = decode_audio(event["audio"], event_id)
        cap = int(self.limits.max_buffer_s * WIRE_RATE_HZ) * BYTES_PER_SAMPLE
        if len(self.buffer) + len(pcm) > cap:
            raise ProtocolError("input_audio_buffer_full", f"the input audio buffer holds at most "
                                f"{self.limits.max_buffer_s:g} s; this chunk was dropped. Commit "
                                "or clear the buffer (or turn on server_vad)", event_id, "audio")
        self.buffer.extend(pcm)
        self._input_bytes += len(pcm)
        if self._detector is None or not pcm:
            return
        detector = self._detector
        loop = asyncio.get_running_loop()
        events = await loop.run_in_executor(self.executor, detector.push, pcm16_to_float(pcm))
        if detector is not self._detector:
            return  # turn detection changed while the VAD ran
        for turn in events:
            if turn.kind == "speech_started":
                self._speech_started(turn.audio_ms)
            elif turn.kind == "speech_stopped":
                await self._listen_up_to(turn.audio_ms)
                self._speech_stopped(turn.audio_ms)
            elif self._listener is not None and self._speech_item_id is not None:
                await self._listen_up_to(turn.audio_ms)
                if turn.kind == "speech_resumed":
                    self._listener.resume()
                elif self.response is None and self.config.turn_detection.create_response:
                    self._listener.pause()  # a tentative end: the engine may start answering
        if self._speech_item_id is not None:
            await self._listen_up_to(audio_ms(self._input_bytes))

    async def _listen_up_to(self, end_ms: int) -> None:
        """Give the listener the turn's audio it has not heard yet, up to ``end_ms``."""
        if self._listener is None or end_ms <= self._heard_ms \
                or self._listened_item_id != self._speech_item_id:
            return
        start = max(0, self._heard_ms - self._buffer_start_ms) * BYTES_PER_MS
        stop = max(0, end_ms - self._buffer_start_ms) * BYTES_PER_MS
        self._heard_ms = end_ms
        if stop > start:
            audio = pcm16_to_float(bytes(self.buffer[start:stop]))
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self._listener.hear, audio)

    def _speech_started(self, audio_start_ms: int) -> None:
        self._trim_buffer_to(audio_start_ms)
        self._speech_item_id = new_id("item")
        self.outbox.put_urgent(self._event("input_audio_buffer.speech_started",
                                           audio_start_ms=audio_start_ms,
                                           item_id=self._speech_item_id))
        if self.response and self.config.turn_detection.interrupt_response:
            self.response.cancel("turn_detected")
            if self.metrics:
                self.metrics.barge_ins.inc()
        if self._listener is None:
            self._listener = self.engine.listen()
        if self._listener is not None and (self.response is None or self.response.cancel_reason):
            self._listener.new_turn()
            self._heard_ms = audio_start_ms
            self._listened_item_id = self._speech_item_id

    def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        self._send("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)
        keep = max(0, audio_end_ms - self._buffer_start_ms) * BYTES_PER_MS
        item = self._commit(item_id, bytes(self.buffer[:keep]))
        del self.buffer[:keep]
        self._buffer_start_ms = audio_end_ms
        self._turn_end_s = time.perf_counter()
        td = self.config.turn_detection
        if td.create_response and self.response is None:
            self._start_response(item)
        else:
            self._maybe_transcribe(item)

    def _trim_buffer_to(self, start_ms: int) -> None:
        drop = max(0, start_ms - self._buffer_start_ms) * BYTES_PER_MS
        del self.buffer[:drop]
        self._buffer_start_ms += drop // BYTES_PER_MS

    async def _on_input_audio_buffer_commit(self, event: dict, event_id) -> None:
        if audio_ms(len(self.buffer)) < MIN_COMMIT_MS:
            raise ProtocolError("input_audio_buffer_commit_empty", f"buffer too small: it holds "
                                f"{audio_ms(len(self.buffer))} ms of audio, at least "
                                f"{MIN_COMMIT_MS} ms are needed", event_id)
        item = self._commit(self._speech_item_id or new_id("item"), bytes(self.buffer))
        self._speech_item_id = None
        self.buffer.clear()
        self._buffer_start_ms = audio_ms(self._input_bytes)
        if self._detector:
            self._detector.reset_speech()
        self._turn_end_s = time.perf_counter()
        self._maybe_transcribe(item)

    async def _on_input_audio_buffer_clear(self, event: dict, event_id) -> None:
        self.buffer.clear()
        self._buffer_start_ms = audio_ms(self._input_bytes)
        self._speech_item_id = None
        if self._detector:
            self._detector.reset_speech()
        self._send("input_audio_buffer.cleared")
        self._listened_item_id = None

    def _commit(self, item_id: str, pcm: bytes) -> Item:
        previous = next(reversed(self.items), None)
        item = self._add_item(Item(item_id, "user", audio=bytearray(pcm)))
        if self.metrics:
            self.metrics.turns.inc()
        self._send("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        self._announce(item, previous)
        return item

    def _maybe_transcribe(self, item: Item) -> None:
        if self.config.transcription_model:
            self._spawn(self._transcribe(item))

    async def _transcribe(self, item: Item) -> None:
        loop = asyncio.get_running_loop()
        audio = pcm16_to_float(bytes(item.audio))
        text = await loop.run_in_executor(self.executor, self.engine.transcribe, audio)
        self._user_transcript(item, text)

    def _user_transcript(self, item: Item, text: str) -> None:
        item.text = text
        if self.config.transcription_model:
            self._send("conversation.item.input_audio_transcription.completed", item_id=item.id,
                       content_index=0, transcript=text,
                       usage={"type": "duration", "seconds": item.audio_ms / 1000})

    # -- conversation items -------------------------------------------------------------
    async def _on_conversation_item_create(self, event: dict, event_id) -> None:
        item = item_from_client(event["item"], event["item"].get("id") or new_id("item"),
                                event_id)
        if item.id in self.items:
            raise ProtocolError("invalid_value", f"an item with id {item.id!r} already exists",
                                event_id, "item.id")
        previous = event.get("previous_item_id") or next(reversed(self.items), None)
        if previous is not None and previous not in self.items:
            raise ProtocolError("item_not_found", f"previous_item_id {previous!r} does not exist",
                                event_id, "previous_item_id")
        self._add_item(item)
        self._announce(item, previous)

    async def _on_conversation_item_truncate(self, event: dict, event_id) -> None:
        item = self._item(event["item_id"], event_id)
        if event["content_index"] != 0:
            raise ProtocolError("invalid_value", "content_index must be 0: items here have one "
                                "content part", event_id, "content_index")
        if self.response and self.response.item is item:
            self.response.cancel("client_cancelled")
        item.truncate(event["audio_end_ms"], event_id)
        self._send("conversation.item.truncated", item_id=item.id, content_index=0,
                   audio_end_ms=event["audio_end_ms"])

    async def _on_conversation_item_delete(self, event: dict, event_id) -> None:
        item = self._item(event["item_id"], event_id)
        if self.response and self.response.item is item:
            raise ProtocolError("invalid_value", "cannot delete the item of the active response; "
                                "cancel it first", event_id, "item_id")
        del self.items[item.id]
        self._send("conversation.item.deleted", item_id=item.id)

    async def _on_conversation_item_retrieve(self, event: dict, event_id) -> None:
        item = self._item(event["item_id"], event_id)
        self._send("conversation.item.retrieved", item=item.wire(self.beta))

    def _item(self, item_id: str, event_id) -> Item:
        if item_id not in self.items:
            raise ProtocolError("item_not_found", f"no item with id {item_id!r}", event_id,
                                "item_id")
        return self.items[item_id]

    def _add_item(self, item: Item) -> Item:
        self.items[item.id] = item
        while len(self.items) > self.limits.max_items:
            self.items.popitem(last=False)
        return item

    def _announce(self, item: Item, previous: str | None) -> None:
        # conversation.item.done is GA-only; the send task drops it for beta clients
        for kind in ("conversation.item.added", "conversation.item.done"):
            self._send(kind, previous_item_id=previous, item=item.wire(self.beta))

    # -- responses ----------------------------------------------------------------------
    async def _on_response_create(self, event: dict, event_id) -> None:
        if self.response is not None:
            raise ProtocolError("conversation_already_has_active_response", "a response is "
                                f"already in progress ({self.response.id}); cancel it first",
                                event_id)
        user = next((i for i in reversed(self.items.values()) if i.role == "user"), None)
        if user is None:
            raise ProtocolError("invalid_value", "there is no user message to answer: append and "
                                "commit audio, or create a user item first", event_id)
        if user.audio is None and not self.engine.accepts_text:
            raise ProtocolError("unsupported_value", f"the {self.engine.name} engine answers "
                                "speech only; send the question as audio", event_id)
        if self._turn_end_s is None or user.audio is None:
            self._turn_end_s = time.perf_counter()
        self._start_response(user)

    async def _on_response_cancel(self, event: dict, event_id) -> None:
        wanted = event.get("response_id")
        if self.response is None or (wanted and wanted != self.response.id):
            raise ProtocolError("response_cancel_not_active", "there is no active response"
                                + (f" with id {wanted!r}" if wanted else "") + " to cancel",
                                event_id, "response_id")
        self.response.cancel("client_cancelled")

    async def _on_output_audio_buffer_clear(self, event: dict, event_id) -> None:
        if self.response is None:
            raise ProtocolError("response_cancel_not_active", "there is no response audio to "
                                "clear", event_id)
        self.response.cancel("client_cancelled")
        self._send("output_audio_buffer.cleared", response_id=self.response.id)

    def _start_response(self, user: Item) -> None:
        history = tuple(m for i in self.items.values() if i is not user
                        for m in [i.history_message()] if m)
        audio = pcm16_to_float(bytes(user.audio)) if user.audio is not None else None
        listener = self._listener if user.id == self._listened_item_id else None
        turn = Turn(audio_24k=audio, text=None if audio is not None else user.text,
                    history=history, listener=listener)
        self.response = ResponseRun(
            self.engine, turn, self.outbox, self.beta, self.conversation_id, self.config.voice,
            on_user_transcript=lambda text: self._user_transcript(user, text),
            on_item=self._add_item, lead_ms=self.limits.output_lead_ms)
        self._spawn(self._run_response(self.response, self._turn_end_s or time.perf_counter()))

    async def _run_response(self, run: ResponseRun, turn_end_s: float) -> None:
        try:
            status = await run.run(self.executor)
        finally:
            if self.response is run:
                self.response = None
        if self.metrics:
            self.metrics.responses.labels(status).inc()
            if run.first_audio_s is not None:
                self.metrics.first_audio.observe(run.first_audio_s - turn_end_s)
        log.info("event=response session=%s response=%s status=%s first_audio_ms=%s stages=%s",
                 self.id, run.id, status, None if run.first_audio_s is None else
                 round(1000 * (run.first_audio_s - turn_end_s)), _round(run.timings_ms))

    # -- plumbing -----------------------------------------------------------------------
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _event(self, kind: str, **fields) -> dict:
        return {"type": kind, "event_id": new_id("event"), **fields}

    def _send(self, kind: str, **fields) -> None:
        self.outbox.put(self._event(kind, **fields))


def _round(timings: dict) -> dict:
    return {k: round(v) for k, v in timings.items() if isinstance(v, (int, float))}

