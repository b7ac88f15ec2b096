"""User-side augmentation for data diversity: speed, pitch, additive noise, reverb.

``augment(samples, rate_hz, settings, seed)`` is deterministic for a given
seed; ``draw_augmentation(rng)`` picks settings from sensible ranges.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from voxloop.audio import read_wav, resample, write_wav
from voxloop.errors import MissingDependencyError, VoxloopError


@dataclass(frozen=True)
class Augmentation:
    """One augmentation recipe; the identity by default."""

    speed: float = field(default=1.0, metadata={"help": "playback speed factor (tempo and pitch)"})
    pitch_semitones: float = field(default=0.0, metadata={"help": "pitch shift, tempo kept"})
    snr_db: float | None = field(default=None, metadata={"help": "add pink noise at this SNR"})
    reverb_rt60_s: float | None = field(default=None, metadata={"help": "synthetic room RT60"})

    def as_dict(self) -> dict:
        return asdict(self)


def draw_augmentation(rng: np.random.Generator) -> Augmentation:
    """Random but moderate settings: speech stays intelligible to a listener."""
    return Augmentation(
        speed=float(rng.uniform(0.9, 1.12)),
        pitch_semitones=float(rng.uniform(-2.5, 2.5)) if rng.random() < 0.6 else 0.0,
        snr_db=float(rng.uniform(15.0, 35.0)) if rng.random() < 0.5 else None,
        reverb_rt60_s=float(rng.uniform(0.15, 0.5)) if rng.random() < 0.3 else None,
    )


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play ``factor`` times faster (shorter and higher), like a tape."""
    if not 0.5 <= factor <= 2.0:
        raise VoxloopError(f"speed factor must be in [0.5, 2], got {factor}")
    if factor == 1.0:
        return samples
    base = 1000
    return resample(samples, round(base * factor), base)


def shift_pitch(samples: np.ndarray, rate_hz: int, semitones: float) -> np.ndarray:
    """Shift pitch with sox's WSOLA ``pitch`` effect; length is kept."""
    if semitones == 0.0:
        return samples
    if shutil.which("sox") is None:
        raise MissingDependencyError(
            "sox is missing: run `make bootstrap` (or apt-get install sox)")
    with tempfile.TemporaryDirectory(prefix="voxloop-aug-") as tmp:
        src, dst = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        write_wav(src, samples * 0.9, rate_hz)
        # -R: sox seeds its dither with a fixed number, so the same input gives the same output
        cmd = ["sox", "-R", str(src), str(dst), "pitch", f"{semitones * 100:.0f}",
               "rate", str(rate_hz)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise VoxloopError(f"sox pitch failed: {done.stderr.strip()[-300:]}")
        shifted, _ = read_wav(dst)
    return shifted / 0.9


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise by shaping white noise in the frequency domain, unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    spectrum /= np.sqrt(np.maximum(freqs, 1.0))
    noise = np.fft.irfft(spectrum, n=num_samples)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink noise so that speech power / noise power is ``snr_db``."""
    speech_rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    noise_rms = speech_rms / (10.0 ** (snr_db / 20.0))
    return samples + noise_rms * pink_noise(samples.size, rng)


def add_reverb(samples: np.ndarray, rate_hz: int, rt60_s: float,
               rng: np.random.Generator) -> np.ndarray:
    """Convolve with an exponentially decaying noise impulse response (60 dB at rt60_s)."""
    from scipy.signal import fftconvolve

    ir_samples = max(1, int(rt60_s * rate_hz))
    t_s = np.arange(ir_samples) / rate_hz
    ir = rng.standard_normal(ir_samples) * np.exp(-6.9078 * t_s / rt60_s)
    ir[0] = 1.0 / 0.3  # a strong direct path keeps the speech in front
    ir *= 0.3 / np.sqrt(np.sum(ir**2))
    wet = fftconvolve(samples, ir)[: samples.size]
    return wet * (np.sqrt(np.mean(samples**2)) / (np.sqrt(np.mean(wet**2)) + 1e-12))


def augment(samples: np.ndarray, rate_hz: int, aug: Augmentation, seed: int) -> np.ndarray:
    """Apply ``aug`` to float32 ``[T]``; same seed, same output. Peak kept below 0.99."""
    rng = np.random.default_rng(seed)
    out = change_speed(samples, aug.speed)
    out = shift_pitch(out, rate_hz, aug.pitch_semitones)
    if aug.reverb_rt60_s:
        out = add_reverb(out, rate_hz, aug.reverb_rt60_s, rng)
    if aug.snr_db is not None:
        out = add_noise(out, aug.snr_db, rng)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)
