"""The engine contract: one engine session per websocket session; a committed user
turn in, answer audio and transcript out.

``Engine.open()`` gives a session its :class:`EngineSession`. The session calls it
in order: ``new_turn`` at speech onset, ``hear`` with the turn's audio as it
arrives, ``pause`` / ``resume`` at a tentative end of the turn and when speech
goes on, ``respond`` once the turn is committed, ``close`` at the end. Speech that
goes on with a turn already ended calls ``resume_turn`` instead of ``new_turn``. An engine
that needs the whole turn (the cascade) ignores what it hears and answers from
the turn's audio.

Threads: ``new_turn``, ``resume_turn``, ``pause``, ``resume`` and ``close`` run on the event loop
and must be cheap; ``hear``, ``respond`` and ``transcribe`` run in worker threads.
``respond`` yields :class:`EngineOutput` pieces as soon as they exist and checks
``cancel`` between steps, so a barge-in stops it within one step.

An engine speaks with one ``voice`` (sessions refuse any other) and says whether it
``follows_instructions``: only then does a turn's ``instructions`` change its answers
(the session says so once where they do not).
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
    heard_live: bool = False  # the engine session heard this turn through new_turn/hear
    instructions: str = ""  # the session's (or the response's) instructions; "" for none


@dataclass(frozen=True)
class EngineOutput:
    audio_24k: np.ndarray | None = None  # float32 [T] answer audio at 24 kHz
    transcript_delta: str = ""  # text of the answer audio, in order
    user_transcript: str | None = None  # what the engine heard, once, before the answer
    # how sure its recognizer is of user_transcript (mean token log-probability), if it says
    user_transcript_logprob: float | None = None
    timings_ms: dict = field(default_factory=dict)  # stage name -> milliseconds
    # with the first audio of a student's answer: its words' log-probability (see Answer)
    words_logprob: float | None = None


class EngineSession(Protocol):
    """One websocket session's side of an engine (see the module docstring for order
    and threads)."""

    def new_turn(self) -> None:
        """Speech started: forget the last turn (and any answer begun for it)."""

    def hear(self, audio_16k: np.ndarray) -> None:
        """float32 ``[T]`` at 16 kHz: the turn's audio since the last call, in order."""

    def pause(self) -> None:
        """A tentative end of the turn: the engine may start answering."""

    def set_turn_detection(self, live: bool, quick: bool = False) -> None:
        """Whether turn detection is on (``live``: the session's audio is heard as it comes,
        else each turn comes whole with ``respond``: push to talk), and whether its turns
        may end as soon as a pause starts (``quick``: semantic_vad answers a clearly
        finished question ~100 ms after the speech, so an answer begun at the pause has
        almost no silence to get ready in); told at the start and on every change."""

    def resume(self) -> None:
        """Speech went on after a pause: an answer begun at the pause is void."""

    def resume_turn(self) -> bool:
        """Speech started soon after the last turn ended (instead of ``new_turn``): go on
        with that turn as if it had not ended, its answer void, and hear the rest. False:
        nothing of it is kept (the session calls ``new_turn`` and later gives ``respond``
        the whole turn, not heard live)."""

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        """Yield the answer piece by piece; stop early once ``cancel`` is set."""

    def transcribe(self, audio_24k: np.ndarray) -> str:
        """Text of user audio, for input transcription without a response."""

    def close(self) -> None:
        """The websocket session ended: give back what the session holds."""


class Engine(Protocol):
    name: str
    accepts_text: bool  # can answer typed user messages
    voice: str  # the one voice it speaks, as sessions name it (see voice_name)
    follows_instructions: bool  # Turn.instructions change its answers
    models: dict[str, str]  # what it runs, role -> model name or folder (/healthz, the log)

    def open(self) -> EngineSession:
        """The engine side of a new websocket session."""

    def warm_up(self) -> None:
        """Load models now rather than on the first turn."""


def voice_name(tts_voice: str) -> str:
    """A TTS voice as sessions name it: without its backend (``piper:joe`` -> ``joe``)."""
    return tts_voice.split(":", 1)[-1]
