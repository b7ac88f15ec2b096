"""The cascade engine: the teachers (ASR -> LLM -> TTS) behind the engine contract.

Whisper needs the whole turn, so a :class:`CascadeSession` ignores what it hears
while the user speaks and answers each turn from its audio. The LLM's reply is read
as it is written where the backend streams (an OpenAI-compatible endpoint) and TTS
runs sentence by sentence, so the first sentence plays while the LLM still writes
the rest and the TTS speaks the next; audio leaves in ``chunk_ms`` pieces and
``cancel`` is checked between pieces and between stages (a cancelled stream is
closed). A turn's instructions are the LLM's system prompt where it follows them
(``openai``); the scripted teacher does not.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import numpy as np

from voxloop.audio import resample
from voxloop.distill.teachers.asr import ASR_RATE_HZ, ASRSettings, load_asr
from voxloop.distill.teachers.llm import (
    LLMSettings,
    follows_instructions,
    load_llm,
    reply_pieces,
)
from voxloop.distill.teachers.tts import ASSISTANT_VOICE, synthesize
from voxloop.realtime.engines.base import EngineOutput, Turn, voice_name
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class CascadeSettings:
    voice: str = field(default=ASSISTANT_VOICE, metadata={
        "help": "the assistant's TTS voice", "flag": "--cascade-voice"})
    chunk_ms: int = field(default=100, metadata={
        "help": "length of each audio delta", "flag": "--cascade-chunk-ms"})


def sentences(pieces: Generator[str, None, None]) -> Iterator[str]:
    """The sentences of a reply whose text arrives in pieces (cut after ``.``, ``!`` or
    ``?`` and a space), each as soon as the piece that ends it is in; closing this
    closes ``pieces``."""
    text = ""
    try:
        for piece in pieces:
            text += piece
            *done, text = _SENTENCE_END.split(text)
            yield from (s for s in (d.strip() for d in done) if s)
    finally:
        pieces.close()
    if text.strip():
        yield text.strip()


class CascadeEngine:
    name = "cascade"
    accepts_text = True

    def __init__(self, settings: CascadeSettings = CascadeSettings(),
                 asr_settings: ASRSettings = ASRSettings(),
                 llm_settings: LLMSettings = LLMSettings()) -> None:
        self.settings = settings
        self._asr = load_asr(asr_settings)
        self._llm = load_llm(llm_settings)
        self.voice = voice_name(settings.voice)
        self.follows_instructions = follows_instructions(self._llm)
        self.models = {"asr": asr_settings.backend + (
            f":{asr_settings.model}" if asr_settings.backend == "whisper" else ""),
            "llm": self._llm.name + (f":{llm_settings.model}@{llm_settings.url}"
                                     if llm_settings.backend == "openai" else ""),
            "tts": settings.voice}

    def warm_up(self) -> None:
        self._asr.transcribe(np.zeros(ASR_RATE_HZ // 2, np.float32), ASR_RATE_HZ)
        synthesize("Hello.", self.settings.voice)

    def open(self) -> CascadeSession:
        return CascadeSession(self)

    def transcribe(self, audio_24k: np.ndarray) -> str:
        return self._transcribe_scored(audio_24k)[0]

    def _transcribe_scored(self, audio_24k: np.ndarray) -> tuple[str, float | None]:
        """What its ASR hears in ``audio_24k`` and how sure it is (``ASR.transcribe_scored``)."""
        return self._asr.transcribe_scored(resample(audio_24k, WIRE_RATE_HZ, ASR_RATE_HZ),
                                           ASR_RATE_HZ)

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        t0 = time.perf_counter()
        text = turn.text
        if text is None:
            text, sure = self._transcribe_scored(turn.audio_24k)
            yield EngineOutput(user_transcript=text, user_transcript_logprob=sure,
                               timings_ms={"asr": 1000 * (time.perf_counter() - t0)})
        if cancel.is_set() or not text.strip():  # nothing heard (a cough): nothing to answer
            return
        t1 = time.perf_counter()
        pieces = reply_pieces(self._llm, list(turn.history), text, turn.instructions or None)
        with contextlib.closing(sentences(pieces)) as answer:
            yield from self._speak(answer, t1, cancel)

    def _speak(self, answer: Iterator[str], llm_start_s: float,
               cancel: threading.Event) -> Iterator[EngineOutput]:
        """TTS sentence by sentence, in ``chunk_ms`` pieces, each sentence's words before
        its audio (the hybrid reads them to see whether it refuses, before any TTS);
        timings: ``llm`` until the first sentence was in, ``tts`` summed over sentences."""
        timings: dict[str, float] = {}
        chunk = WIRE_RATE_HZ * self.settings.chunk_ms // 1000
        for n, sentence in enumerate(answer):
            timings.setdefault("llm", 1000 * (time.perf_counter() - llm_start_s))
            if cancel.is_set():
                return
            yield EngineOutput(transcript_delta=(" " if n else "") + sentence)
            if not any(c.isalnum() for c in sentence):  # "...", "?!": words, nothing to say
                continue
            t2 = time.perf_counter()
            samples, rate_hz = synthesize(sentence, self.settings.voice)
            audio = resample(samples, rate_hz, WIRE_RATE_HZ)
            timings["tts"] = timings.get("tts", 0.0) + 1000 * (time.perf_counter() - t2)
            for i in range(0, len(audio), chunk):
                if cancel.is_set():
                    return
                yield EngineOutput(audio_24k=audio[i:i + chunk],
                                   timings_ms=dict(timings) if i == 0 else {})


class CascadeSession:
    """A websocket session's side of the cascade: nothing per session is kept, since
    Whisper hears each turn whole; live audio is ignored."""

    def __init__(self, engine: CascadeEngine) -> None:
        self.engine = engine

    def new_turn(self) -> None:
        pass

    def hear(self, audio_16k: np.ndarray) -> None:
        pass  # the turn's audio comes whole with respond

    def pause(self) -> None:
        pass

    def set_turn_detection(self, live: bool, quick: bool = False) -> None:
        pass  # every turn comes whole; nothing is begun before it ends

    def resume(self) -> None:
        pass

    def resume_turn(self) -> bool:
        return False  # it keeps nothing: the whole turn comes with respond

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        return self.engine.respond(turn, cancel)

    def transcribe(self, audio_24k: np.ndarray) -> str:
        return self.engine.transcribe(audio_24k)

    def close(self) -> None:
        pass
