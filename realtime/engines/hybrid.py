"""The hybrid engine: the student answers speech, the teachers answer the rest.

On spoken questions of its domain the distilled student answers better than the teacher
cascade it learned from, in ~0.4 s rather than ~1 s; but it hears speech only, knows only
its domain and follows no instructions. A :class:`HybridSession` sends each turn where it
is answered best:

- typed text -> the cascade (the student takes no text);
- a turn with instructions, when the cascade's LLM follows them (``--llm openai``) -> the
  cascade (the student would ignore them);
- speech -> the student, unless its words are the domain's polite refusal ("Sorry, I can
  only help with ..."): then that answer is dropped before any of its audio is sent and
  the cascade answers the same audio (Whisper may hear a question the student did not,
  and an OpenAI-compatible LLM answers what is outside the domain);
- and where the student is unsure of its words (their log-probability under its own text
  head is below ``min_words_logprob``), the cascade is asked too, before any of the
  student's audio is sent: it answers unless its words are the refusal; its refusal is
  taken only where its Whisper was sure of what it heard (``refusal_heard_logprob``: a
  clear question outside the domain, where the student would make an answer up), else the
  student answers after all (a question Whisper misheard). An unsure turn waits for the
  cascade's Whisper and LLM (not its TTS, which starts only once its answer is taken).
  ``voxloop eval routing`` measures both thresholds and keeps them beside the student's
  weights (:mod:`distill.student.confidence`);
- one of the two always answers: where the cascade, asked, fails (its LLM endpoint down)
  or gives no words, the student's answer stands; where the student writes nothing, the
  cascade answers.

Live audio goes to the student's session only (it prefills while the user speaks; the
cascade hears each turn whole), and input transcription is the cascade's Whisper, which
hears better than the student's CTC head.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from voxloop.errors import VoxloopError
from voxloop.realtime.engines.base import Engine, EngineOutput, EngineSession, Turn

log = logging.getLogger("voxloop.realtime")


def plain_words(text: str) -> str:
    """Lowercase words without punctuation: how the student's words and the domain's
    sentences are compared (the student writes no commas)."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


@dataclass(frozen=True)
class HybridSettings:
    min_words_logprob: str = field(default="auto", metadata={
        "help": "ask the cascade about a spoken turn when the student's words score below "
                "this log-probability under its own text head: auto = as measured for the "
                "student's weights (voxloop eval routing --export; none measured: never), "
                "none = never (only its refusals go to the cascade), or a number such as -0.5",
        "flag": "--hybrid-min-words-logprob"})
    refusal_heard_logprob: str = field(default="auto", metadata={
        "help": "when asked, the cascade's refusal answers the turn only where its Whisper "
                "is at least this sure of what it heard (mean token log-probability: a clear "
                "question outside the domain, not a mishearing), else the student answers: "
                "auto = as measured for the student's weights (none measured: never), none = "
                "never, or a number such as -0.35", "flag": "--hybrid-refusal-heard-logprob"})

    def thresholds(self, student_folder: str) -> tuple[float | None, float | None]:
        """``(min_words_logprob, refusal_heard_logprob)`` for the student in
        ``student_folder`` (None: never ask / never take a refusal)."""
        from voxloop.distill.student.confidence import read_routing

        measured = None
        if "auto" in (self.min_words_logprob.strip().lower(),
                      self.refusal_heard_logprob.strip().lower()):
            measured = read_routing(student_folder)
        return (_threshold("--hybrid-min-words-logprob", self.min_words_logprob,
                           measured and measured.min_words_logprob),
                _threshold("--hybrid-refusal-heard-logprob", self.refusal_heard_logprob,
                           measured and measured.refusal_heard_logprob))


def _threshold(flag: str, value: str, measured: float | None) -> float | None:
    """A threshold setting's value: ``auto`` (``measured``), ``none`` or a log-probability."""
    text = value.strip().lower()
    if text in ("auto", "none"):
        return measured if text == "auto" else None
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number > 0:
        raise VoxloopError(f"{flag} {value!r}: auto, none, or a log-probability (a number at "
                           "most 0, e.g. -0.5)")
    return number


class HybridEngine:
    name = "hybrid"
    accepts_text = True

    def __init__(self, native: Engine, cascade: Engine, refusal: str | None = None,
                 min_words_logprob: float | None = None,
                 refusal_heard_logprob: float | None = None) -> None:
        """``native`` answers speech, ``cascade`` text, instructions and what ``native``
        refuses or is unsure of; ``refusal``: the domain's out-of-domain answer (default:
        the domain's); ``min_words_logprob``: below it the student is unsure (None: never);
        ``refusal_heard_logprob``: the cascade's refusal of a turn the student is unsure of
        is taken where its recognizer is at least this sure (None: never)."""
        if native.voice != cascade.voice:
            raise VoxloopError(f"the hybrid engine speaks with one voice: the student speaks "
                               f"{native.voice!r}, the cascade {cascade.voice!r} (set "
                               f"--cascade-voice to the student's)")
        if refusal is None:
            from voxloop.distill.teachers.domain.data import load_domain

            refusal = load_domain()["fallback"]
        self.native, self.cascade, self.refusal = native, cascade, plain_words(refusal)
        self.min_words_logprob = min_words_logprob
        self.refusal_heard_logprob = refusal_heard_logprob
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

    def refuses(self, words: str) -> bool:
        """Whether ``words`` (either engine's) are the domain's refusal."""
        return plain_words(words) == self.refusal

    def unsure(self, logprob: float | None) -> bool:
        """Whether the student's words, of log-probability ``logprob`` (None: not known),
        are ones it is unsure of."""
        return (self.min_words_logprob is not None and logprob is not None
                and logprob < self.min_words_logprob)

    def takes_refusal(self, heard_logprob: float | None) -> bool:
        """Whether the cascade's refusal answers a turn the student is unsure of, its
        recognizer this sure (None: not known) of what it heard."""
        return (self.refusal_heard_logprob is not None and heard_logprob is not None
                and heard_logprob >= self.refusal_heard_logprob)


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

    def set_turn_detection(self, live: bool, quick: bool = False) -> None:
        self.native.set_turn_detection(live, quick)

    def resume(self) -> None:
        self.native.resume()

    def resume_turn(self) -> bool:
        return self.native.resume_turn()

    def respond(self, turn: Turn, cancel: threading.Event) -> Iterator[EngineOutput]:
        if self.engine.for_cascade(turn):
            yield from self.cascade.respond(turn, cancel)
            return
        # the student writes its words before its first audio: hold them until then; the
        # cascade answers instead if they are its refusal or none, or if it is unsure of
        # them and the cascade, asked, gives words and does not refuse (else, or where the
        # cascade fails, the student goes on where it waited)
        held: list[EngineOutput] | None = []
        words, cascade, begun = "", None, []  # the cascade's answer, and what it said already
        answer = self.native.respond(turn, cancel)
        try:
            for out in answer:
                if held is None:
                    yield out
                    continue
                held.append(out)
                if out.audio_24k is None:
                    words += out.transcript_delta
                    continue
                refused = self.engine.refuses(words)
                if refused or self.engine.unsure(out.words_logprob):
                    asked = self.cascade.respond(turn, cancel)
                    if (begun := self._first_words(asked, refused)) is not None:
                        cascade = asked
                if cascade is not None:
                    break
                yield from held
                held = None
            else:
                if held is not None:  # it ended before any audio
                    if not cancel.is_set() and (self.engine.refuses(words) or not words.strip()):
                        asked = self.cascade.respond(turn, cancel)
                        if (begun := self._first_words(asked, True)) is not None:
                            cascade = asked
                    if cascade is None:
                        yield from held
        finally:
            answer.close()  # stops the student's answer where it was
        if cascade is not None:
            with contextlib.closing(cascade):
                if not cancel.is_set():
                    yield from begun
                    yield from cascade

    def _first_words(self, answer: Iterator[EngineOutput], take_refusal: bool
                     ) -> list[EngineOutput] | None:
        """The cascade's ``answer`` read up to its first words: what it gave so far, or None
        (``answer`` closed, so the student's answer stands) where it failed (its LLM
        endpoint down), gave no words, or gave the refusal while its recognizer was not
        sure enough of what it heard for the refusal to be taken (unless ``take_refusal``:
        the student refused first)."""
        begun, heard_logprob = [], None
        try:
            for out in answer:
                begun.append(out)
                if out.user_transcript is not None:
                    heard_logprob = out.user_transcript_logprob
                if out.transcript_delta or out.audio_24k is not None:
                    break
            else:
                return None
        except Exception:  # noqa: BLE001 - the student's answer is the better reply
            log.exception("event=cascade_failed fallback=student")
            answer.close()
            return None
        if not take_refusal and self.engine.refuses("".join(o.transcript_delta
                                                            for o in begun)) \
                and not self.engine.takes_refusal(heard_logprob):
            answer.close()
            return None
        return begun

    def transcribe(self, audio_24k: np.ndarray) -> str:
        return self.cascade.transcribe(audio_24k)

    def close(self) -> None:
        self.native.close()
        self.cascade.close()
