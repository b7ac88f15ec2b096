"""One client session: the protocol state machine, free of any socket code.

The server's receive task calls :meth:`Session.handle` with each parsed client
event; everything the session says goes into its :class:`Outbox`, built by
:mod:`voxloop.realtime.wire.events`. The session owns one :class:`InputAudio`
(the uncommitted buffer, its clock and the 16 kHz stream) and one engine
session. Model work (resampling, the VAD, the engine) runs on the executor,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, replace

from voxloop.realtime.conversation import Conversation, item_audio_24k
from voxloop.realtime.engines.base import Engine, Turn
from voxloop.realtime.input_audio import InputAudio, joined_pcm16
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.response import ResponseRun
from voxloop.realtime.semantic_turns import new_turn_detector, prepare_turn_detection
from voxloop.realtime.turns import TurnDetector, TurnEvent
from voxloop.realtime.wire import events
from voxloop.realtime.wire.ids import new_id
from voxloop.realtime.wire.items import Item
from voxloop.realtime.wire.protocol import ProtocolError, decode_audio
from voxloop.realtime.wire.session_config import (
    ResponseOptions,
    SessionConfig,
    check_voice,
    response_options,
)

log = logging.getLogger("voxloop.realtime")
MIN_COMMIT_MS = 100  # as OpenAI: a shorter buffer cannot be committed
ENGINE_DONE_S = 1.0  # a turn that goes on waits this long at most for its answer to wind down


@dataclass(frozen=True)
class SessionLimits:
    """What one session may hold. No defaults: the numbers live once, in the server's
    settings (``ServerSettings.session_limits()``)."""

    max_buffer_s: float  # uncommitted input audio kept at most
    max_items: int  # oldest items are forgotten past this
    output_lead_ms: int  # answer audio is sent at most this far ahead of real time


class Session:
    def __init__(self, engine: Engine, executor: Executor, outbox: Outbox,
                 limits: SessionLimits, beta: bool = False,
                 config: SessionConfig = SessionConfig(), metrics=None) -> None:
        self.id = new_id("sess")
        self.conversation_id = new_id("conv")
        self.engine, self.executor, self.outbox, self.beta = engine, executor, outbox, beta
        self.config = replace(config, voice=engine.voice)  # the one voice the engine speaks
        self.limits, self.metrics = limits, metrics
        self._told_instructions = False  # said once that this engine does not follow them
        self.conversation = Conversation(outbox, limits.max_items, beta)
        self.items = self.conversation.items
        self.audio = InputAudio(limits.max_buffer_s)
        self.engine_session = engine.open()
        self._use_turn_detection(config)
        self._speech_item_id: str | None = None  # the user item being spoken (server VAD)
        self._heard_item_id: str | None = None  # the user item the engine session heard live
        self.response: ResponseRun | None = None
        self._last_run: ResponseRun | None = None  # the latest response, over or not
        self._tasks: set[asyncio.Task] = set()
        self._turn_end_s: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.outbox.put(events.session_created(self.config.wire(self.id, self.beta)))

    async def close(self) -> None:
        if self.response:
            self.response.cancel("client_cancelled")
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.engine_session.close()

    async def handle(self, event: dict) -> None:
        """Act on one parsed client event; ProtocolError means an ``error`` event."""
        handler = getattr(self, "_on_" + event["type"].replace(".", "_"))
        await handler(event, event.get("event_id"))

    def _use_turn_detection(self, config: SessionConfig) -> None:
        """A detector for ``config``; the engine told if turns may end as a pause starts."""
        self._detector = new_turn_detector(config.turn_detection, start_ms=self.audio.end_ms)
        # the last turn the detector ended and where its audio ended: speech soon after it
        # may go on with it (TurnEvent.resumes); while it does, _resuming
        self._resumable: tuple[Item, int] | None = None
        self._resuming: tuple[Item, int] | None = None
        self.engine_session.set_turn_detection(
            self._detector is not None, self._detector is not None and self._detector.QUICK_TURNS)

    # -- session and input audio -------------------------------------------------------
    async def _on_session_update(self, event: dict, event_id) -> None:
        config = self.config.updated(event["session"], event_id)
        check_voice(config.voice, self.engine.voice, event_id, "session", self.beta)
        if config.turn_detection != self.config.turn_detection and not (
                self._detector and self._detector.retune(config.turn_detection)):
            await prepare_turn_detection(config.turn_detection, self.executor, event_id)
            self._use_turn_detection(config)
            self._speech_item_id = None
            self.audio.stop_listening()
        self.config = config
        self.outbox.put(events.session_updated(config.wire(self.id, self.beta)))
        self._note_instructions(config.instructions)

    def _note_instructions(self, instructions: str) -> None:
        """Say once per session when the engine does not follow instructions (they are
        still stored and echoed, as the API expects)."""
        if not instructions or self.engine.follows_instructions or self._told_instructions:
            return
        self._told_instructions = True
        self.outbox.put(events.error(
            "instructions_not_followed", f"the {self.engine.name} engine cannot follow "
            "instructions: they are stored and echoed, but its answers do not change. Only "
            "the cascade engine with an OpenAI-compatible LLM follows them, as its system "
            "prompt (voxloop serve --engine cascade --llm openai)", param="instructions"))

    async def _on_input_audio_buffer_append(self, event: dict, event_id) -> None:
        pcm = decode_audio(event["audio"], event_id)
        detector = self._detector
        if detector is None and not self.audio.fits(len(pcm)):
            raise ProtocolError("input_audio_buffer_full", f"the input audio buffer holds at most "
                                f"{self.audio.max_buffer_s:g} s and turn detection is off, so "
                                "only a commit or a clear empties it; this chunk was dropped. "
                                "Commit or clear the buffer, or turn on server_vad (it drops the "
                                "silence between turns)", event_id, "audio")
        if not pcm:
            return
        loop = asyncio.get_running_loop()
        turn_events = await loop.run_in_executor(self.executor, self._take_in, pcm, detector)
        if detector is not self._detector:
            return  # turn detection changed while the VAD ran
        for turn in turn_events:
            await self._on_turn_event(turn)
            if detector.undecided and detector is self._detector:  # (after the engine's pause)
                for decided in await loop.run_in_executor(self.executor, detector.decide):
                    await self._on_turn_event(decided)
        await self._hear()  # the rest of this chunk, if the engine is hearing a turn
        if detector is not None:
            self._drop_stale_audio(detector)

    def _take_in(self, pcm: bytes, detector: TurnDetector | None) -> list[TurnEvent]:
        """In a worker thread: buffer the chunk (converted and resampled once), run the VAD."""
        samples_16k = self.audio.append(pcm)
        return detector.push(samples_16k) if detector is not None else []

    def _drop_stale_audio(self, detector: TurnDetector) -> None:
        """With turn detection on, audio that can no longer belong to a turn (older than the
        prefix padding before the next VAD window) is dropped after every append, as OpenAI
        does, so silence never fills the buffer. ``max_buffer_s`` then bounds one turn: a
        turn that passes it is cut (its audio dropped, with an error) and the VAD listens
        on: speech that goes on starts a new turn at once."""
        keep_from_ms = detector.keep_from_ms
        if keep_from_ms is not None:
            self.audio.trim_to(keep_from_ms)
            return
        if not self.audio.over_limit:
            return
        held_ms = self.audio.buffered_ms
        self.audio.clear()
        detector.reset_speech()
        self._speech_item_id = self._resumable = self._resuming = None
        self.outbox.put_urgent(events.error(
            "input_audio_buffer_full", f"this turn went on for {held_ms / 1000:.1f} s, longer "
            f"than the input audio buffer holds ({self.audio.max_buffer_s:g} s, the server's "
            "--max-buffer-s): its audio was dropped and nothing is answered for it. The "
            "session listens on; speech that goes on starts a new turn", param="audio"))

    async def _on_turn_event(self, turn: TurnEvent) -> None:
        if turn.kind == "speech_started":
            await self._speech_started(turn.audio_ms, turn.resumes)
        elif turn.kind == "speech_stopped":
            await self._hear(turn.audio_ms)
            self._speech_stopped(turn.audio_ms)
        elif self.audio.listening:
            await self._hear(turn.audio_ms)
            if turn.kind == "speech_resumed":
                self.engine_session.resume()
            elif self.response is None and self.config.turn_detection.create_response:
                self.engine_session.pause()  # a tentative end: the engine may start answering

    async def _hear(self, up_to_ms: int | None = None) -> None:
        """Give the engine session the turn's audio it has not heard yet, up to ``up_to_ms``."""
        samples_16k = self.audio.unheard_16k(up_to_ms)
        if len(samples_16k):
            await asyncio.get_running_loop().run_in_executor(
                self.executor, self.engine_session.hear, samples_16k)

    async def _speech_started(self, audio_start_ms: int, resumes: bool = False) -> None:
        """``resumes``: the speech goes on with the last turn the detector ended (unless the
        client deleted it): one turn, the answer begun to it void; an engine that heard it
        live keeps what it heard once it is done with that answer."""
        resumed, self._resumable = self._resumable if resumes else None, None
        if resumed is not None and resumed[0].id not in self.items:
            resumed = None
        self.audio.trim_to(audio_start_ms)
        self._speech_item_id = new_id("item")
        self.outbox.put_urgent(events.input_audio_buffer_speech_started(
            audio_start_ms, self._speech_item_id))
        if self.response and self.config.turn_detection.interrupt_response:
            self.response.cancel("turn_detected")
            if self.metrics:
                self.metrics.barge_ins.inc()
        self._resuming = None
        if self.response is None or self.response.cancel_reason:
            done = await self._engine_done_answering()  # a cancelled answer's worker has
            live = resumed is not None and resumed[0].id == self._heard_item_id and done \
                and self.engine_session.resume_turn()  # let go of the engine (or timed out)
            if not live:
                self.engine_session.new_turn()
            self._resuming = resumed
            self.audio.listen_from(audio_start_ms)
            # an engine that forgot the turn hears its first part again with the whole
            self._heard_item_id = self._speech_item_id if live or resumed is None else None
        else:  # the engine is still answering: this turn is answered from its audio later
            self.audio.stop_listening()

    async def _engine_done_answering(self) -> bool:
        """Whether the engine is done with the last response (a cancelled one's worker winds
        down within a step or two), so it can go on with that response's turn."""
        return self._last_run is None or await self._last_run.engine_done(ENGINE_DONE_S)

    def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._speech_item_id or new_id("item")
        self._speech_item_id = None
        self.audio.stop_listening()
        self.outbox.put(events.input_audio_buffer_speech_stopped(audio_end_ms, item_id))
        start_ms, pcm = self.audio.start_ms, self.audio.take(audio_end_ms)
        if self._resuming is not None:  # one turn: the first part's items leave for the whole
            resumed, resumed_end_ms = self._resuming
            self.conversation.retract(resumed, self._active_item)
            pcm = joined_pcm16(bytes(resumed.audio), resumed_end_ms, pcm, start_ms)
            self._resuming = None
        item = self._commit(item_id, pcm)
        self._resumable = item, audio_end_ms
        self._turn_end_s = time.perf_counter()
        if self.config.turn_detection.create_response and self.response is None:
            self._start_response(item)
        else:
            self._maybe_transcribe(item)

    async def _on_input_audio_buffer_commit(self, event: dict, event_id) -> None:
        if self.audio.buffered_ms < MIN_COMMIT_MS:
            raise ProtocolError("input_audio_buffer_commit_empty", f"buffer too small: it holds "
                                f"{self.audio.buffered_ms} ms of audio, at least "
                                f"{MIN_COMMIT_MS} ms are needed", event_id)
        item = self._commit(self._speech_item_id or new_id("item"), self.audio.take())
        self._speech_item_id = None
        self._resumable = self._resuming = None
        self.audio.stop_listening()
        if self._detector:
            self._detector.reset_speech()
        self._turn_end_s = time.perf_counter()
        self._maybe_transcribe(item)

    async def _on_input_audio_buffer_clear(self, event: dict, event_id) -> None:
        self.audio.clear()
        self._speech_item_id = self._heard_item_id = None
        self._resumable = self._resuming = None
        if self._detector:
            self._detector.reset_speech()
        self.outbox.put(events.input_audio_buffer_cleared())

    def _commit(self, item_id: str, pcm: bytes) -> Item:
        previous = self.conversation.last_id
        item = self.conversation.add(Item(item_id, "user", audio=bytearray(pcm)))
        if self.metrics:
            self.metrics.turns.inc()
        self.outbox.put(events.input_audio_buffer_committed(item_id, previous))
        self.conversation.announce(item, previous)
        return item

    def _maybe_transcribe(self, item: Item) -> None:
        if self.config.transcription_model:
            self._spawn(self._transcribe(item))

    async def _transcribe(self, item: Item) -> None:
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(self.executor, self.engine_session.transcribe,
                                          item_audio_24k(item))
        self._user_transcript(item, text)

    def _user_transcript(self, item: Item, text: str) -> None:
        if item.id not in self.items:
            return  # gone: a turn that went on replaced it
        item.text = text
        if self.config.transcription_model:
            self.outbox.put(events.conversation_item_input_audio_transcription_completed(
                item.id, text, audio_s=item.audio_ms / 1000))

    # -- conversation items -------------------------------------------------------------
    async def _on_conversation_item_create(self, event: dict, event_id) -> None:
        self.conversation.create(event, event_id)

    async def _on_conversation_item_truncate(self, event: dict, event_id) -> None:
        item = self.conversation.truncate(event, event_id)
        if self.response and self.response.item is item:
            self.response.cancel("client_cancelled")

    async def _on_conversation_item_delete(self, event: dict, event_id) -> None:
        item = self.conversation.get(event["item_id"], event_id)
        self.conversation.delete(item, self._active_item, event_id)

    async def _on_conversation_item_retrieve(self, event: dict, event_id) -> None:
        self.conversation.retrieve(event["item_id"], event_id)

    @property
    def _active_item(self) -> Item | None:
        """The item a response is still writing (None: none, or it was cancelled)."""
        running = self.response is not None and not self.response.cancel_reason
        return self.response.item if running else None

    # -- responses ----------------------------------------------------------------------
    async def _on_response_create(self, event: dict, event_id) -> None:
        options = response_options(event.get("response"), event_id)
        check_voice(options.voice, self.engine.voice, event_id, "response", self.beta)
        if self.response is not None:
            raise ProtocolError("conversation_already_has_active_response", "a response is "
                                f"already in progress ({self.response.id}); cancel it first",
                                event_id)
        user = self.conversation.last_user(event_id)
        if user.audio is None and not self.engine.accepts_text:
            raise ProtocolError("unsupported_value", f"the {self.engine.name} engine answers "
                                "speech only; send the question as audio", event_id)
        if self._turn_end_s is None or user.audio is None:
            self._turn_end_s = time.perf_counter()
        if options.instructions is not None:
            self._note_instructions(options.instructions)
        self._start_response(user, options)

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
        self.outbox.put(events.output_audio_buffer_cleared(self.response.id))

    def _start_response(self, user: Item, options: ResponseOptions | None = None) -> None:
        """Answer ``user``; ``options``: this response's own (None fields: the session's)."""
        options = options or ResponseOptions()
        history = tuple(m for i in self.items.values() if i is not user
                        for m in [i.history_message()] if m)
        audio = item_audio_24k(user)
        turn = Turn(audio_24k=audio, text=None if audio is not None else user.text,
                    history=history, heard_live=user.id == self._heard_item_id,
                    instructions=self.config.instructions if options.instructions is None
                    else options.instructions)
        run = ResponseRun(
            self.engine_session, turn, self.outbox, self.beta, self.conversation_id,
            self.config.voice, on_user_transcript=lambda text: self._user_transcript(user, text),
            on_item=self.conversation.add, lead_ms=self.limits.output_lead_ms,
            on_done=lambda: self._forget_response(run), metadata=options.metadata)
        self.response = self._last_run = run
        self._spawn(self._run_response(run, self._turn_end_s or time.perf_counter()))

    def _forget_response(self, run: ResponseRun) -> None:
        """``run`` is over (its response.done is next, or it ended): no longer active."""
        if self.response is run:
            self.response = None

    async def _run_response(self, run: ResponseRun, turn_end_s: float) -> None:
        try:
            status = await run.run(self.executor)
        finally:
            self._forget_response(run)
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


def _round(timings: dict) -> dict:
    return {k: round(v) for k, v in timings.items() if isinstance(v, (int, float))}

