"""The hybrid engine: the student answers speech, the teachers answer the rest.

On spoken questions of its domain the distilled student answers better than the teacher
cascade it learned from, in ~0.4 s rather than ~1 s; but it hears speech only, knows only
its domain and follows no instructions. A :class:`HybridSession` sends each turn where it
is answered best:

- typed text -> the cascade (the student takes no text);
- a turn with instructions, when the cascade's LLM follows them (``--llm openai``) -> the
  cascade (the student would ignore them);
- speech -> the student, unless its words are the domain's polite refusal ("Sorry, I can
  only help with ...") or it is unsure of them (their log-probability under its own text
  head is below ``min_words_logprob``: ``voxloop eval routing`` measures where, and keeps
  the threshold beside the student's weights): then that answer is dropped before any of
  its audio is sent and the cascade answers the same audio (Whisper may hear a question
  the student did not, and an OpenAI-compatible LLM answers what is outside the domain).

Live audio goes to the student's session only (it prefills while the user speaks; the
cascade hears each turn whole), and input transcription is the cascade's Whisper, which
hears better than the student's CTC head.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from voxloop.errors import VoxloopError
from voxloop.realtime.engines.base import Engine, EngineOutput, EngineSession, Turn


def plain_words(text: str) -> str:
    """Lowercase words without punctuation: how the student's words and the domain's
    sentences are compared (the student writes no commas)."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@dataclass(frozen=True)
class HybridSettings:
    min_words_logprob: str = field(default="auto", metadata={
        "help": "hand a spoken turn to the cascade when the student's words score below "
                "this log-probability under its own text head: auto = the threshold measured "
                "for the student's weights (voxloop eval routing --export; none measured: "
                "only its refusals), none = only its refusals, or a number such as -0.5",
        "flag": "--hybrid-min-words-logprob"})

    def threshold(self, student_folder: str) -> float | None:
        """The threshold this setting means for the student in ``student_folder``."""
        value = self.min_words_logprob.strip().lower()
        if value == "auto":
            from voxloop.distill.student.confidence import read_threshold

            return read_threshold(student_folder)
        if value == "none":
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number > 0:
            raise VoxloopError(f"--hybrid-min-words-logprob {self.min_words_logprob!r}: auto, "
                               "none, or a log-probability (a number at most 0, e.g. -0.5)")
        return number


class HybridEngine:
    name = "hybrid"
    accepts_text = True

    def __init__(self, native: Engine, cascade: Engine, refusal: str | None = None,
                 min_words_logprob: float | None = None) -> None:
        """``native`` answers speech, ``cascade`` text, instructions and what ``native``
        refuses or is unsure of; ``refusal``: the student's out-of-domain answer (default:
        the domain's); ``min_words_logprob``: below it the student is unsure (None: never)."""
        if native.voice != cascade.voice:
            raise VoxloopError(f"the hybrid engine speaks with one voice: the student speaks "
                               f"{native.voice!r}, the cascade {cascade.voice!r} (set "
                               f"--cascade-voice to the student's)")
        if refusal is None:
            from voxloop.distill.teachers.domain.data import load_domain

            refusal = load_domain()["fallback"]
        self.native, self.cascade, self.refusal = native, cascade, plain_words(refusal)
        self.min_words_logprob = min_words_logprob
        self.voice = native.voice
        self.follows_instructions = cascade.follows_instructions
        self.models = {**cascade.models, **native.models}

    def warm_up(self) -> None:
        self.native.warm_up()
        self.cascade.warm_up()

    def open(self) -> HybridSession:
        return HybridSession(self)

    def for_cascade(self, turn: Turn) -> bool:
        """Whether the cascade answers ``turn`` outright."""
        return turn.audio_24k is None or (bool(turn.instructions)
                                          and self.cascade.follows_instructions)

    def hands_over(self, words: str, logprob: float | None) -> bool:
        """Whether the student's answer ``words`` (log-probability ``logprob``, None where
        not known) goes to the cascade instead: its refusal, or words it is unsure of."""
        return plain_words(words) == self.refusal or (
            self.min_words_logprob is not None and logprob is not None
            and logprob < self.min_words_logprob)


class HybridSession:
    """A websocket session's side of both engines (see the module docstring)."""

    def __init__(self, engine: HybridEngine) -> None:
        self.engine = engine
        self.native: EngineSession = engine.native.open()
        self.cascade: EngineSession = engine.cascade.open()

    def new_turn(self) -> None:
        self.native.new_turn()
        self.cascade.new_turn()

    def hear(self, audio_16k: np.ndarray) -> None:
        self.native.hear(audio_16k)  # (the cascade ignores live audio)

    def pause(self) -> None:
        self.native.pause()

    def set_quick_turns(self, quick: bool) -> None:
        self.native.set_quick_turns(quick)

    def resume(self) -> None:
        self.native.resume()

    def resume_turn(self) -> bool:
        return self.native.resume_turn()

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        if self.engine.for_cascade(turn):
            yield from self.cascade.respond(turn, cancel)
            return
        # the student writes its words before its first audio: hold them until then, and
        # hand the turn to the cascade if they are its refusal or it is unsure of them
        held: list[EngineOutput] | None = []
        words, refused = "", False
        answer = self.native.respond(turn, cancel)
        try:
            for out in answer:
                if held is not None:
                    if out.audio_24k is None:
                        held.append(out)
                        words += out.transcript_delta
                        continue
                    if refused := self.engine.hands_over(words, out.words_logprob):
                        break
                    yield from held
                    held = None
                yield out
            else:
                if held is not None:  # it ended before any audio
                    refused = self.engine.hands_over(words, None)
                    if not refused:
                        yield from held
        finally:
            answer.close()  # stops the student's answer where it was
        if refused and not cancel.is_set():
            yield from self.cascade.respond(turn, cancel)

    def transcribe(self, audio_24k: np.ndarray) -> str:
        return self.cascade.transcribe(audio_24k)

    def close(self) -> None:
        self.native.close()
        self.cascade.close()
