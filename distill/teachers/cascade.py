"""The teacher cascade: user speech -> ASR -> LLM -> TTS -> assistant speech."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from voxloop.distill.teachers.asr import ASR
from voxloop.distill.teachers.llm import LLM
from voxloop.distill.teachers.tts import ASSISTANT_VOICE, synthesize


@dataclass(frozen=True)
class CascadeResult:
    transcript: str  # text1: what ASR heard
    answer: str  # text2: what the LLM replied
    samples: np.ndarray  # speech2, float32 [T]
    sample_rate_hz: int
    stage_ms: dict[str, float] = field(default_factory=dict)  # asr, llm, tts


class Cascade:
    """Run the three teachers in order and time each stage."""

    def __init__(self, asr: ASR, llm: LLM, voice: str = ASSISTANT_VOICE) -> None:
        self.asr, self.llm, self.voice = asr, llm, voice

    def __call__(self, samples: np.ndarray, rate_hz: int,
                 history: list[dict] | None = None) -> CascadeResult:
        t0 = time.perf_counter()
        transcript = self.asr.transcribe(samples, rate_hz)
        t1 = time.perf_counter()
        answer = self.llm.reply(history or [], transcript)
        t2 = time.perf_counter()
        speech, speech_hz = synthesize(answer, self.voice)
        t3 = time.perf_counter()
        return CascadeResult(transcript, answer, speech, speech_hz, {
            "asr": 1000 * (t1 - t0), "llm": 1000 * (t2 - t1), "tts": 1000 * (t3 - t2)})
