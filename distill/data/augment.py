"""User-side augmentation for data diversity: speed, pitch, reverb in a room,
additive noise at an SNR, level.

``augment(samples, rate_hz, settings, seed)`` is deterministic for a given
seed; ``draw_augmentation(rng)`` picks settings from sensible ranges. A room is
its reverberation time (RT60), how far the talker is from the microphone
(direct-to-reverberant ratio) and its size (the delay before the first
reflections); noise is white, pink or brown.
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
    snr_db: float | None = field(default=None, metadata={"help": "add noise at this SNR"})
    reverb_rt60_s: float | None = field(default=None, metadata={"help": "synthetic room RT60"})
    noise_color: str = field(default="pink", metadata={"help": "white, pink or brown noise"})
    reverb_drr_db: float | None = field(default=None, metadata={
        "help": "direct-to-reverberant ratio, high when close to the mic (None: v1's fixed one)"})
    reverb_predelay_ms: float = field(default=0.0, metadata={
        "help": "delay of the first reflections after the direct sound (room size)"})
    gain_db: float = field(default=0.0, metadata={"help": "level change (a quieter talker)"})

    def as_dict(self) -> dict:
        return asdict(self)


NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power falls as 1/f**exponent


def draw_augmentation(rng: np.random.Generator) -> Augmentation:
    """Random but moderate settings: speech stays intelligible to a listener."""
    speed = float(rng.uniform(0.9, 1.12))
    pitch = float(rng.uniform(-2.5, 2.5)) if rng.random() < 0.6 else 0.0
    snr_db = float(rng.uniform(10.0, 35.0)) if rng.random() < 0.5 else None
    color = str(rng.choice(list(NOISE_EXPONENTS)))
    room = rng.random() < 0.4
    return Augmentation(
        speed=round(speed, 4), pitch_semitones=round(pitch, 3),
        snr_db=round(snr_db, 2) if snr_db is not None else None,
        reverb_rt60_s=round(float(rng.uniform(0.15, 0.8)), 3) if room else None,
        noise_color=color if snr_db is not None else "pink",
        reverb_drr_db=round(float(rng.uniform(-6.0, 12.0)), 2) if room else None,
        reverb_predelay_ms=round(float(rng.uniform(2.0, 25.0)), 2) if room else 0.0,
        gain_db=round(float(rng.uniform(-10.0, 0.0)), 2) if rng.random() < 0.3 else 0.0,
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


def colored_noise(num_samples: int, rng: np.random.Generator, color: str = "pink"
                  ) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise by shaping white noise in the frequency
    domain, unit RMS."""
    if color not in NOISE_EXPONENTS:
        raise VoxloopError(f"noise color must be one of {list(NOISE_EXPONENTS)}, got {color!r}")
    spectrum = np.fft.rfft(rng.standard_normal(num_samples))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    spectrum /= np.maximum(freqs, 1.0) ** (NOISE_EXPONENTS[color] / 2)
    noise = np.fft.irfft(spectrum, n=num_samples)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def pink_noise(num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise, unit RMS."""
    return colored_noise(num_samples, rng, "pink")


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator,
              color: str = "pink") -> np.ndarray:
    """Add noise of ``color`` so that speech power / noise power is ``snr_db``."""
    speech_rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    noise_rms = speech_rms / (10.0 ** (snr_db / 20.0))
    return samples + noise_rms * colored_noise(samples.size, rng, color)


def add_reverb(samples: np.ndarray, rate_hz: int, rt60_s: float, rng: np.random.Generator,
               drr_db: float | None = None, predelay_ms: float = 0.0) -> np.ndarray:
    """Convolve with a room's impulse response: the direct sound, then after
    ``predelay_ms`` an exponentially decaying noise tail (60 dB down at ``rt60_s``),
    ``drr_db`` below the direct sound in energy (None: the fixed direct path of v1)."""
    from scipy.signal import fftconvolve

    delay = int(predelay_ms * rate_hz / 1000)
    tail_samples = max(1, int(rt60_s * rate_hz))
    t_s = np.arange(tail_samples) / rate_hz
    tail = rng.standard_normal(tail_samples) * np.exp(-6.9078 * t_s / rt60_s)
    ir = np.concatenate([np.zeros(delay), tail])
    if drr_db is None:
        ir[0] = 1.0 / 0.3  # a strong direct path keeps the speech in front
    else:
        ir[0] = np.sqrt(np.sum(ir[1:] ** 2) * 10.0 ** (drr_db / 10.0))
    ir *= 0.3 / np.sqrt(np.sum(ir**2))
    wet = fftconvolve(samples, ir)[: samples.size]
    return wet * (np.sqrt(np.mean(samples**2)) / (np.sqrt(np.mean(wet**2)) + 1e-12))


def augment(samples: np.ndarray, rate_hz: int, aug: Augmentation, seed: int) -> np.ndarray:
    """Apply ``aug`` to float32 ``[T]``; same seed, same output. Peak kept below 0.99."""
    rng = np.random.default_rng(seed)
    out = change_speed(samples, aug.speed)
    out = shift_pitch(out, rate_hz, aug.pitch_semitones)
    if aug.reverb_rt60_s:
        out = add_reverb(out, rate_hz, aug.reverb_rt60_s, rng, aug.reverb_drr_db,
                         aug.reverb_predelay_ms)
    if aug.snr_db is not None:
        out = add_noise(out, aug.snr_db, rng, aug.noise_color)
    out = out * 10.0 ** (aug.gain_db / 20.0)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32)


def spoken(text: str, voice: str, rng: np.random.Generator, fraction: float = 0.7) -> np.ndarray:
    """``text`` said by ``voice`` as float32 16 kHz audio ``[T]``, augmented with chance
    ``fraction`` (as the datasets are) by a recipe and seed drawn from ``rng``, always in the
    same order, so a seeded ``rng`` makes the same clips every run."""
    from voxloop.audio import MODEL_RATE_HZ
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize(text, voice)
    audio = resample(samples, rate_hz, MODEL_RATE_HZ).astype(np.float32)
    recipe, seed = draw_augmentation(rng), int(rng.integers(2**31))
    return augment(audio, MODEL_RATE_HZ, recipe, seed) if rng.random() < fraction else audio

