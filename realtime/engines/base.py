"""The engine contract: a committed user turn in, answer audio and transcript out.

An engine runs in a worker thread, never on the event loop. ``respond`` yields
:class:`EngineOutput` pieces as soon as they exist and checks ``cancel`` between
steps, so a barge-in stops it within one step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Turn:
    """What the engine answers. Exactly one of ``audio_24k`` and ``text`` is set."""

    audio_24k: np.ndarray | None = None  # float32 [T] at 24 kHz: the user's speech
    text: str | None = None  # a typed user message
    history: tuple[dict, ...] = ()  # earlier {"role", "content"} messages, oldest first
    listener: Listener | None = None  # the session's listener, if it heard this turn live


@dataclass(frozen=True)
class EngineOutput:
    audio_24k: np.ndarray | None = None  # float32 [T] answer audio at 24 kHz
    transcript_delta: str = ""  # text of the answer audio, in order
    user_transcript: str | None = None  # what the engine heard, once, before the answer
    timings_ms: dict = field(default_factory=dict)  # stage name -> milliseconds


class Listener(Protocol):
    """A session's live ear, for engines that work while the user is still speaking.
    The session calls it in order: ``new_turn`` at speech onset, ``hear`` with the
    turn's audio as it arrives (off the event loop), ``pause`` / ``resume`` at a
    tentative end of the turn and when speech goes on, ``close`` at the end."""

    def new_turn(self) -> None: ...

    def hear(self, audio_24k: np.ndarray) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    name: str
    accepts_text: bool  # can answer typed user messages

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        """Yield the answer piece by piece; stop early once ``cancel`` is set."""

    def transcribe(self, audio_24k: np.ndarray) -> str:
        """Text of user audio, for input transcription without a response."""

    def listen(self) -> Listener | None:
        """A listener for a new session, or None if the engine only answers whole turns."""

    def warm_up(self) -> None:
        """Load models now rather than on the first turn."""
