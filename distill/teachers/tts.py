"""Text-to-speech teachers: one interface, a catalog of the voices this machine has.

``synthesize("hello", "flite:slt")`` returns ``(samples[T] float32, sample_rate_hz)``.
Voice names are ``backend:voice``. The assistant always speaks with
``ASSISTANT_VOICE``; every other voice is a "user" voice for synthetic data.
Variant voices (espeak-ng's voice variants and dialects, piper's joe at other
speeds and prosody noise, e.g. ``piper:joe@ls1.2``) add speakers to the synth
plan; ``available_voices()`` leaves them out unless asked, so the codec corpus
and the teacher evaluation keep their twelve base voices.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np

from voxloop.errors import VoxloopError

ASSISTANT_VOICE = "piper:joe"


@dataclass(frozen=True)
class Voice:
    """One voice of one backend."""

    name: str  # "backend:voice", unique in the catalog
    backend: str
    sample_rate_hz: int
    description: str
    variant: bool = False  # one of the many generated voices, see the module doc

    @property
    def role(self) -> str:
        return "assistant" if self.name == ASSISTANT_VOICE else "user"


class TTSBackend(Protocol):
    """A speech synthesizer with a fixed set of voices."""

    name: str

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, what to install)."""

    def voices(self) -> list[Voice]:
        """Every voice of this backend (whether or not it is installed)."""

    def installed(self, voice: Voice) -> bool:
        """Whether this voice's data is here, once ``available()`` says the program is."""

    def synthesize(self, text: str, voice: Voice) -> np.ndarray:
        """Speak ``text``; float32 ``[T]`` at ``voice.sample_rate_hz``."""


@lru_cache(maxsize=1)
def _backends() -> tuple[TTSBackend, ...]:
    from voxloop.distill.teachers.tts_backends import all_backends

    return tuple(all_backends())


def list_voices(include_missing: bool = False) -> list[tuple[Voice, bool, str]]:
    """``(voice, installed, how_to_install)`` for every known voice."""
    rows = []
    for backend in _backends():
        ok, fix = backend.available()
        for voice in backend.voices():
            here = ok and backend.installed(voice)
            if here or include_missing:
                rows.append((voice, here, fix if not ok else "" if here else
                             f"{voice.name} is not in this {backend.name} installation"))
    return rows


def available_voices(role: str | None = None, variants: bool = False) -> list[Voice]:
    """Voices usable on this machine; ``role`` "user" or "assistant" filters;
    ``variants`` adds the generated variant voices to the base ones."""
    voices = [v for v, _, _ in list_voices()]
    return [v for v in voices if (role is None or v.role == role) and (variants or not v.variant)]


def get_voice(name: str) -> tuple[Voice, TTSBackend]:
    """Look a voice up by name; a clear error if unknown or not installed."""
    for backend in _backends():
        for voice in backend.voices():
            if voice.name == name:
                ok, fix = backend.available()
                if not ok:
                    raise VoxloopError(f"voice {name!r} is not installed here: {fix}")
                if not backend.installed(voice):
                    raise VoxloopError(f"voice {name!r} is not in this {backend.name} "
                                       "installation (see `voxloop tts --list-voices`)")
                return voice, backend
    known = ", ".join(v.name for v, _, _ in list_voices(include_missing=True))
    raise VoxloopError(f"unknown voice {name!r}; known voices: {known}")


def synthesize(text: str, voice_name: str = ASSISTANT_VOICE) -> tuple[np.ndarray, int]:
    """Speak ``text`` with a catalogued voice -> (float32 ``[T]``, sample rate Hz)."""
    if not text.strip():
        raise VoxloopError("cannot synthesize empty text")
    voice, backend = get_voice(voice_name)
    samples = backend.synthesize(text, voice)
    if samples.size == 0:
        raise VoxloopError(f"voice {voice_name!r} produced no audio for {text!r}")
    return samples.astype(np.float32, copy=False), voice.sample_rate_hz
