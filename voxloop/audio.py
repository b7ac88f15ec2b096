"""Waveform helpers shared by every package: read, write, resample, pcm16.

Waveforms are float32 numpy arrays in [-1, 1], mono, shape ``[T]``. Only numpy,
scipy and soundfile are imported, so the light client can use this module too.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np

from voxloop.errors import VoxloopError

PCM16_SCALE = 32768.0  # int16 <-> float: -32768 is -1.0; +1.0 clips to 32767
MODEL_RATE_HZ = 16000  # what the models hear: Silero, Whisper, the datasets' user speech


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as mono float32 ``[T]`` and its sample rate in Hz."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise VoxloopError(f"audio file not found: {path}")
    try:
        samples, sample_rate_hz = sf.read(str(path), dtype="float32", always_2d=True)
    except RuntimeError as exc:
        raise VoxloopError(f"cannot read {path} as audio: {exc}") from exc
    return samples.mean(axis=1).astype(np.float32), int(sample_rate_hz)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate_hz: int) -> Path:
    """Write mono float32 ``[T]`` as 16-bit PCM wav; create parent folders."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate_hz, subtype="PCM_16",
             format="WAV")  # whatever the name ends in (atomic_write's temporary names)
    return path


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Polyphase resampling of ``[T]`` from ``from_hz`` to ``to_hz``."""
    if from_hz == to_hz:
        return samples.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(from_hz, to_hz)
    return resample_poly(samples, to_hz // g, from_hz // g).astype(np.float32)


class StreamingResampler:
    """Resample a stream chunk by chunk; the output equals one pass over the whole signal.

    A causal windowed-sinc FIR at the ``up/down`` polyphase rate (1 ms of delay at
    24 -> 16 kHz). State is the last ``taps - 1`` upsampled inputs and the phase.
    """

    def __init__(self, from_hz: int, to_hz: int, taps_per_phase: int = 32) -> None:
        from scipy.signal import firwin

        g = gcd(from_hz, to_hz)
        self.up, self.down = to_hz // g, from_hz // g
        if self.up == self.down:  # the same rate: samples pass through (no filter to make)
            self._fir = None
            return
        n_taps = taps_per_phase * self.up
        self._fir = (firwin(n_taps, 1.0 / max(self.up, self.down)) * self.up).astype(np.float32)
        self._history = np.zeros(n_taps - 1, np.float32)  # upsampled input, newest last
        self._phase = 0  # index into the next upsampled chunk of the next output sample

    def push(self, samples: np.ndarray) -> np.ndarray:
        """``[T]`` input samples -> the output samples they complete."""
        if self._fir is None:
            return np.asarray(samples, np.float32)
        upsampled = np.zeros(len(samples) * self.up, np.float32)
        upsampled[::self.up] = samples
        buffer = np.concatenate([self._history, upsampled])
        picks = np.arange(self._phase, len(upsampled), self.down)
        self._phase = (self._phase - len(upsampled)) % self.down
        self._history = buffer[len(buffer) - len(self._history):]
        if not len(picks):
            return np.zeros(0, np.float32)
        windows = np.lib.stride_tricks.sliding_window_view(buffer, len(self._fir))[picks]
        return (windows @ self._fir[::-1]).astype(np.float32)


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """float32 ``[T]`` in [-1, 1) -> int16 ``[T]`` (the one scale voxloop uses: 32768)."""
    return np.clip(np.round(samples * PCM16_SCALE), -PCM16_SCALE, PCM16_SCALE - 1).astype("<i2")


def from_pcm16(samples: np.ndarray) -> np.ndarray:
    """int16 ``[T]`` -> float32 ``[T]`` in [-1, 1)."""
    return samples.astype(np.float32) / PCM16_SCALE


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 ``[T]`` in [-1, 1] -> little-endian 16-bit PCM bytes."""
    return to_pcm16(samples).tobytes()


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM bytes -> float32 ``[T]``; odd byte counts are an error."""
    if len(data) % 2:
        raise VoxloopError(f"pcm16 audio must have an even number of bytes, got {len(data)}")
    return from_pcm16(np.frombuffer(data, dtype="<i2"))


def rms_dbfs(samples: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (-inf for silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")
