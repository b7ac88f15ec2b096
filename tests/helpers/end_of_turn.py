"""Helpers for semantic_vad tests: a fake end-of-turn model and short flite speech."""

from __future__ import annotations

from functools import cache

import numpy as np

from voxloop.audio import resample
from voxloop.client.files import speech_end_sample
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ


class FakeEndOfTurn:
    """The end-of-turn model's surface, with P(finished) fixed; counts the audio heard."""

    def __init__(self, p_finished: float) -> None:
        self.p_finished = p_finished
        self.asked_at_samples: list[int] = []
        self.on_ask = lambda: None  # called as it is asked (a test's probe)

    def init_state(self) -> list:
        return []

    def push(self, state: list, wav_16k) -> None:
        state.append(len(wav_16k))

    def probability(self, state: list) -> float:
        self.asked_at_samples.append(sum(state))
        self.on_ask()
        return self.p_finished


@cache
def speech_24k(text: str = "what is the capital of france") -> np.ndarray:
    """``text`` by flite:kal16 at 24 kHz, cut at its last loud sample (~50 ms to make)."""
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize(text, "flite:kal16")
    audio = resample(samples, rate_hz, WIRE_RATE_HZ)
    return audio[:speech_end_sample(audio)]
