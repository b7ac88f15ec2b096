"""The native engine: the distilled student answers user speech with speech, codec to codec.

A websocket session's :class:`NativeSession` holds one model slot (with ``votes`` N: N
slots, each fed by an ear started i/N of a frame later, and the wording most of them wrote
is said, ``answers.VotedAnswer``; only for the first ``voting_sessions`` sessions, while at
most ``votes_up_to_sessions`` are open, and for semantic_vad's turns only with
``votes_quick_turns``). It hears the user's 16 kHz audio while they speak through its ear
(:mod:`realtime.engines.ears`: the streaming codec encoder or semantic tokenizer, block by
block) and the model thread (:mod:`realtime.engines.batcher`) prefills the frames into the
session's KV cache row, so at the end of the turn only the answer is left to compute. With
``speculative`` the answer starts at the first silent VAD window (a semantic ear's partial
block flushed on a copy): rolled back if the user goes on, sent at once if the silence holds.

``respond`` turns the answer's words into transcript deltas and its frames into audio
deltas through the codec's streaming decoder (its ``assistant`` one by default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from voxloop.audio import MODEL_RATE_HZ, StreamingResampler
from voxloop.distill.teachers.tts import ASSISTANT_VOICE
from voxloop.errors import VoxloopError
from voxloop.realtime.engines.answers import Answer, Frame, VotedAnswer, Word, ended
from voxloop.realtime.engines.base import EngineOutput, Turn, voice_name
from voxloop.realtime.engines.native_settings import NativeSettings
from voxloop.realtime.engines.seats import VotingSeats
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ

if TYPE_CHECKING:
    from voxloop.realtime.engines.commands import Slot
    from voxloop.realtime.engines.ears import CodecEar, SemanticEar, ShiftedEar

    Ear = CodecEar | SemanticEar | ShiftedEar

POLL_S = 0.01  # how often a waiting response checks its cancel flag
MAX_DECODE_FRAMES = 5  # frames decoded per call at most (the first: alone)
DECODE_LEAD_S = 1.0  # answer audio decoded at most this far ahead of real time


class NativeEngine:
    name = "native"
    accepts_text = False
    voice = voice_name(ASSISTANT_VOICE)  # the voice its answers were distilled from
    follows_instructions = False  # it learned to answer, not to follow a system prompt

    def __init__(self, settings: NativeSettings = NativeSettings()) -> None:
        import torch

        from voxloop.distill.student.codec import load_student_codec
        from voxloop.distill.student.generate import SamplingOptions, StudentStepper
        from voxloop.distill.student.model import load_student, student_folder
        from voxloop.distill.student.vocab import Tokenizer
        from voxloop.distill.student.votes import skips
        from voxloop.realtime.engines.batcher import ContinuousBatcher

        self.settings = settings
        for flag, value in (("--native-votes", settings.votes),
                            ("--native-slots", settings.slots),
                            ("--native-max-prefill-frames", settings.max_prefill_frames)):
            if value < 1:
                raise VoxloopError(f"{flag} must be at least 1, not {value}")
        for flag, value, zero in (
                ("--native-voting-sessions", settings.voting_sessions, "no limit"),
                ("--native-votes-up-to-sessions", settings.votes_up_to_sessions, "no limit"),
                ("--native-draft-words", settings.draft_words, "one word per call")):
            if value < 0:
                raise VoxloopError(f"{flag} must be 0 ({zero}) or more, not {value}")
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        model, vocab = load_student(settings.student)
        self.tokenizer = Tokenizer(vocab)
        self.codec = load_student_codec(settings.codec, vocab, settings.decoder)
        self.semantic = None  # the semantic tokenizer a semantic student hears with
        self.models = {"student": str(student_folder(settings.student)),
                       "codec": self.codec.name}
        if model.config.user_input == "semantic":
            from voxloop.distill.student.user_tokens import load_student_semantic

            self.semantic = load_student_semantic(settings.semantic, vocab, model)
            self.models["semantic"] = self.semantic.name
        self.k_in, self.k_out = model.config.k_in, model.config.k_out
        rate_hz = self.semantic.frame_rate_hz if self.semantic is not None \
            else self.codec.frame_rate
        # samples of each turn the ears skip, one ear per vote
        self.ear_skips = skips(round(MODEL_RATE_HZ / rate_hz), settings.votes)
        self.stepper = StudentStepper(model, self.tokenizer, SamplingOptions(
            draft_words=settings.draft_words, heard_intents=settings.heard_intents))
        self.batcher = ContinuousBatcher(self.stepper, settings.slots,
                                         settings.max_prefill_frames)
        self.seats = VotingSeats(settings.votes, settings.voting_sessions,
                                 settings.votes_up_to_sessions)
        self._torch = torch

    # -- the engine contract ------------------------------------------------------------
    def warm_up(self) -> None:
        """One short turn through every part, so the first user does not pay for it."""
        session = self.open()
        try:
            session.hear(np.zeros(MODEL_RATE_HZ // 2, np.float32))
            for _ in session.respond(Turn(heard_live=True), threading.Event()):
                pass
        finally:
            session.close()

    def open(self) -> NativeSession:
        return NativeSession(self)

    def new_ear(self) -> Ear:
        """A fresh stream of what the student hears with (one per turn)."""
        from voxloop.realtime.engines.ears import CodecEar, SemanticEar

        if self.semantic is not None:
            return SemanticEar(self.semantic)
        return CodecEar(self.codec, self.k_in)

    def new_ears(self, count: int) -> list[Ear]:
        """``count`` ears (1 or ``votes``), the i-th of N skipping the turn's first i/N
        of a frame."""
        from voxloop.realtime.engines.ears import ShiftedEar

        return [ShiftedEar(self.new_ear(), skip) if skip else self.new_ear()
                for skip in self.ear_skips[:count]]

    def _relay(self, answer: Answer | VotedAnswer, listener: NativeSession, cancel: threading.Event,
               t0: float) -> Iterator[EngineOutput]:
        torch = self._torch
        decoder = self.codec.stream_decoder(1)
        upsample = StreamingResampler(self.codec.sample_rate, WIRE_RATE_HZ)
        first_word, limit, decoded_s = True, 1, 0.0
        timings: dict = {}
        try:
            while not cancel.is_set():
                item = answer.get(POLL_S)
                if item is None:
                    continue
                if ended(item):
                    return
                if first_word:  # (the model thread has run the answer's tail by now)
                    first_word = False
                    if answer.flush_ms is not None:
                        timings["hear_flush"] = answer.flush_ms
                    yield EngineOutput(user_transcript=self.tokenizer.decode_ctc(answer.heard))
                if isinstance(item, Word):
                    yield EngineOutput(transcript_delta=(" " if "first_word" in timings else "")
                                       + item.text)
                    timings.setdefault("first_word", 1000 * (time.perf_counter() - t0))
                    continue
                # decode the frames already made, a few per call; the first one alone
                frames, more = [item.codes], None
                while len(frames) < limit and isinstance(more := answer.get(0), Frame):
                    frames.append(more.codes)
                    more = None
                limit = MAX_DECODE_FRAMES
                if "first_audio" in timings:  # keep decoding just ahead of the listener:
                    played_s = time.perf_counter() - t0 - timings["first_audio"] / 1000
                    if cancel.wait(max(0.0, decoded_s - played_s - DECODE_LEAD_S)):
                        break  # (spreads the work, so other sessions' turns are not starved)
                codes = torch.from_numpy(np.stack(frames, 1)[None].astype(np.int64))
                audio = upsample.push(decoder.push(codes)[0, 0].numpy())
                decoded_s += len(frames) / self.codec.frame_rate
                if "first_audio" not in timings:
                    timings["first_audio"] = 1000 * (time.perf_counter() - t0)
                    timings["answer_ahead"] = 1000 * max(0.0, t0 - answer.started_s)
                yield EngineOutput(audio_24k=audio.astype(np.float32), timings_ms=dict(timings),
                                   words_logprob=answer.words_logprob)
                if ended(more):  # words never follow frames: anything else is the end
                    return
        finally:
            listener.stop(answer)  # a no-op for a finished answer


class NativeSession:
    """One websocket session's side of the engine: 16 kHz audio in while the user
    speaks, frames to its model slot (one per vote: each hears the turn through its own
    ear); answers from those slots. ``borrowed``: a session's helper for one turn heard
    whole beside its live one (or a transcription), in one spare slot, neither counted
    among the open sessions nor taking a voting seat."""

    def __init__(self, engine: NativeEngine, borrowed: bool = False) -> None:
        self.engine = engine
        self.slots: list[Slot] = []
        self._borrowed = borrowed
        self._ear_count = 1 if borrowed else engine.seats.claim()
        try:
            for _ in range(self._ear_count):
                self.slots.append(engine.batcher.open())
        except VoxloopError:
            self.close()  # all of a session's slots or none
            raise
        self._speculative: Answer | VotedAnswer | None = None
        self._quick_turns = False  # one ear: the answer is due too soon after the speech
        # the session feeds it live audio (turn detection is on): a turn sent whole is
        # heard in slots of its own, not the session's
        self._hears_live = False
        self.new_turn()

    @property
    def heard_anything(self) -> bool:
        return (self._ears is not None and self._ears[0].heard_samples > 0) \
            or self._speculative is not None

    def new_turn(self) -> None:
        """Speech started: forget the last turn (its answer included). Cheap: the
        ears are made by the first ``hear``, off the event loop."""
        for slot in self.slots:
            slot.new_turn()
        self._ears: list[Ear] | None = None
        self._frames = 0
        self._speculative = None
        self._ended: Answer | VotedAnswer | None = None  # the answer of a turn resume_turn
        #                                                  can go on with
        self._given: Answer | VotedAnswer | None = None  # the last answer to this turn

    def resume_turn(self) -> bool:
        """Speech went on with the turn just ended: its answer (begun at the pause, so the
        ears were never flushed; released to a response or not) is rolled back and the ears
        hear on. False when the turn ended without a tentative answer (its ears flushed) or
        was not heard live."""
        answer = self._ended if self._ended is not None else self._speculative
        if answer is None:
            return False
        self._rollback(answer)
        self._ended = self._speculative = self._given = None
        return True

    def hear(self, audio_16k: np.ndarray) -> None:
        """User audio as it arrives (runs the ears' encoders: call off the event loop)."""
        self._hears_live = True
        self._hear(audio_16k)

    def _hear(self, audio_16k: np.ndarray) -> None:
        if self._ears is None:
            seat = 1 if self._quick_turns else len(self.slots)
            self._ears = self.engine.new_ears(self.engine.seats.ears_now(seat))
        for i, ear in enumerate(self._ears):
            self._send(i, ear.push(audio_16k))

    def set_turn_detection(self, live: bool, quick: bool = False) -> None:
        self._hears_live = live
        self._quick_turns = quick and not self.engine.settings.votes_quick_turns

    def pause(self) -> None:
        """The first silent window: start a tentative answer (if speculative) from what
        was heard, a semantic ear's partial block included (flushed on a copy by the
        model thread)."""
        if not self.engine.settings.speculative or self._speculative is not None \
                or self._ears is None:
            return
        tails = [ear.tentative() for ear in self._ears]
        if self._frames or tails[0] is not None:
            self._speculative = self._answer(tails)

    def resume(self) -> None:
        """Speech went on after a pause: the tentative answer is void."""
        if self._speculative is not None:
            self._rollback(self._speculative)
            self._speculative = None

    def end_of_turn(self) -> Answer | VotedAnswer:
        """The turn is over: the tentative answer if there is one, else a new one. Asked
        again for the same turn (a response cancelled and created again), the answer
        given before is rolled back first, so the new one starts from the question."""
        if self._given is not None:
            self._rollback(self._given)
            self._given = self._ended = None
        if self._speculative is not None:
            answer = self._ended = self._given = self._speculative
            self._speculative = None
            return answer
        self._ended = None
        flush_ms = None
        if self._ears is not None:
            t0 = time.perf_counter()
            for i, ear in enumerate(self._ears):
                self._send(i, ear.flush())
            flush_ms = 1000 * (time.perf_counter() - t0)
        answer = self._given = self._answer([None] * (len(self._ears) if self._ears else 1))
        answer.flush_ms = flush_ms
        return answer

    def stop(self, answer: Answer | VotedAnswer) -> None:
        """Stop writing ``answer`` (a no-op for a finished one)."""
        for slot, one in self._per_slot(answer):
            slot.stop(one)

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        t0 = time.perf_counter()
        live = turn.heard_live and self.heard_anything
        # a turn this session did not hear (a manual commit, an item sent whole) is heard
        # whole: in the session's own slots where it hears nothing live (turn detection
        # off: push to talk), else in slots of their own, so the live turn is left as it is
        own = not live and not self._hears_live
        ear = self if live or own else NativeSession(self.engine, borrowed=True)
        try:
            if not live:
                if turn.audio_24k is None:
                    raise VoxloopError("the native engine answers speech only")
                self._ended = None  # what its slots hold is not this turn
                if own:
                    self.new_turn()
                ear._hear(_model_rate(turn.audio_24k))
            answer = ear.end_of_turn()
            yield from self.engine._relay(answer, ear, cancel, t0)
        finally:
            if not (live or own):
                ear.close()

    def transcribe(self, audio_24k: np.ndarray) -> str:
        """What the student's CTC head heard (its own recognition, no Whisper), in
        slots of their own."""
        ear = NativeSession(self.engine, borrowed=True)
        try:
            ear._hear(_model_rate(audio_24k))
            answer = ear.end_of_turn()
            ear.stop(answer)
            while (item := answer.get(10.0)) is not None and not ended(item):
                pass
            return self.engine.tokenizer.decode_ctc(answer.heard)
        finally:
            ear.close()

    def close(self) -> None:
        for slot in self.slots:
            slot.close()
        self.slots = []
        if self._ear_count and not self._borrowed:  # closing twice gives nothing back twice
            self.engine.seats.release(self._ear_count)
        self._ear_count = 0

    def _answer(self, tails: list) -> Answer | VotedAnswer:
        # one slot per ear this turn; the vote keeps its own list (close() empties the
        # session's while a response thread may still be reading the vote)
        slots = self.slots[:len(tails)]
        answers = self.engine.batcher.answer(slots, tails)
        if len(answers) == 1:
            return answers[0]
        return VotedAnswer(answers, lambda i: slots[i].stop(answers[i]))

    def _rollback(self, answer: Answer | VotedAnswer) -> None:
        for slot, one in self._per_slot(answer):
            slot.rollback(one)

    def _per_slot(self, answer: Answer | VotedAnswer) -> list[tuple[Slot, Answer]]:
        answers = answer.answers if isinstance(answer, VotedAnswer) else [answer]
        return list(zip(self.slots, answers, strict=False))

    def _send(self, i: int, frames: np.ndarray) -> None:
        """User frames ``[K, T]`` to slot ``i``'s row."""
        if frames.shape[-1]:
            if i == 0:  # the frames heard, counted once (every ear hears the same turn)
                self._frames += frames.shape[-1]
            self.slots[i].listen(frames)


def _model_rate(audio_24k: np.ndarray) -> np.ndarray:
    """A whole turn's 24 kHz audio at 16 kHz, through the same filter as live audio."""
    return StreamingResampler(WIRE_RATE_HZ, MODEL_RATE_HZ).push(np.asarray(audio_24k, np.float32))
