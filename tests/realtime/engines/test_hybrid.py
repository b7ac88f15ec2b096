"""The hybrid engine's routing on scripted fakes (milliseconds): speech to the student, typed
text and followed instructions to the cascade, and a student's refusal handed to the cascade
before any of its audio leaves. The real engines behind a real server: test_hybrid_e2e.py."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from tests.realtime.fakes import QUESTION_24K, FakeEngine, Piece, Script
from voxloop.errors import VoxloopError
from voxloop.realtime.engines.base import Turn
from voxloop.realtime.engines.hybrid import HybridEngine, plain_words

REFUSAL = "Sorry, I can only help with simple math."
STUDENT = Script(user_transcript="what is two plus two",
                 pieces=(Piece("two plus two", tone_ms=0), Piece(" is four", tone_ms=0),
                         Piece("", 300.0, 200), Piece("", 320.0, 200)))
REFUSING = Script(pieces=(Piece("sorry i can only", tone_ms=0),
                          Piece(" help with simple math", tone_ms=0), Piece("", 300.0, 200)))
TEACHERS = Script(user_transcript="What is two plus two?",
                  pieces=(Piece("Two plus two is four.", 500.0, 300),))


def hybrid(student: Script = STUDENT, follows: bool = False) -> HybridEngine:
    return HybridEngine(FakeEngine(student, accepts_text=False, follows_instructions=False),
                        FakeEngine(TEACHERS, follows_instructions=follows), refusal=REFUSAL)


def answer(engine: HybridEngine, turn: Turn) -> tuple[str, list, object, object]:
    """(transcript, outputs, the student's fake session, the cascade's)."""
    session = engine.open()
    outputs = list(session.respond(turn, threading.Event()))
    return "".join(o.transcript_delta for o in outputs), outputs, session.native, session.cascade


def test_speech_goes_to_the_student_whole():
    transcript, outputs, student, cascade = answer(hybrid(), Turn(audio_24k=QUESTION_24K))
    assert transcript == "two plus two is four"
    assert outputs[0].user_transcript == "what is two plus two"  # held words come first
    assert sum(o.audio_24k is not None for o in outputs) == 2
    assert student.calls == ["respond"] and "respond" not in cascade.calls


def test_typed_text_goes_to_the_cascade():
    engine = hybrid()
    assert engine.accepts_text and not engine.native.accepts_text
    transcript, _, student, cascade = answer(engine, Turn(text="what is two plus two"))
    assert transcript == "Two plus two is four."
    assert "respond" in cascade.calls and "respond" not in student.calls


def test_a_refusal_is_answered_by_the_cascade_before_any_student_audio():
    transcript, outputs, student, cascade = answer(hybrid(REFUSING),
                                                   Turn(audio_24k=QUESTION_24K))
    assert transcript == "Two plus two is four."  # nothing of the student's words
    assert [o.user_transcript for o in outputs if o.user_transcript] == ["What is two plus two?"]
    audio = np.concatenate([o.audio_24k for o in outputs if o.audio_24k is not None])
    assert len(audio) == len(TEACHERS.audio_24k())  # none of the student's audio
    assert student.pieces_made == 3  # stopped at its first audio piece
    assert cascade.turns[0].audio_24k is QUESTION_24K  # the cascade hears the same audio


def test_instructions_go_to_the_cascade_only_where_its_llm_follows_them():
    turn = Turn(audio_24k=QUESTION_24K, instructions="Answer like a pirate.")
    assert answer(hybrid(follows=True), turn)[0] == "Two plus two is four."
    assert answer(hybrid(follows=False), turn)[0] == "two plus two is four"
    assert hybrid(follows=True).follows_instructions
    assert not hybrid(follows=False).follows_instructions


def test_a_cancelled_student_answer_is_not_handed_on():
    engine = hybrid(REFUSING)
    cancel = threading.Event()
    cancel.set()
    session = engine.open()
    outputs = list(session.respond(Turn(audio_24k=QUESTION_24K), cancel))
    assert not any(o.transcript_delta or o.audio_24k is not None for o in outputs)
    assert "respond" not in session.cascade.calls  # a barge-in is not a refusal


def test_live_audio_reaches_the_student_and_transcription_the_cascade():
    session = hybrid().open()
    session.new_turn()
    session.hear(np.zeros(160, np.float32))
    session.pause()
    session.resume()
    assert session.native.calls == ["new_turn", "hear", "pause", "resume"]
    assert "hear" not in session.cascade.calls
    assert session.transcribe(QUESTION_24K) == TEACHERS.user_transcript
    session.close()
    assert session.native.closed and session.cascade.closed


def test_one_voice_or_a_clear_error():
    other = FakeEngine(TEACHERS)
    other.voice = "kal16"
    with pytest.raises(VoxloopError, match="--cascade-voice"):
        HybridEngine(FakeEngine(STUDENT, accepts_text=False), other, refusal=REFUSAL)


def test_the_domain_refusal_compares_without_punctuation():
    from voxloop.distill.teachers.domain.data import load_domain

    refusal = load_domain()["fallback"]
    assert plain_words(refusal) == plain_words(refusal.lower().replace(",", "").rstrip("."))
    assert plain_words("The capital of France is Paris.") == "the capital of france is paris"


def unsure(logprob: float) -> Script:
    """The student's right words, of which it is as sure as ``logprob`` says."""
    return Script(user_transcript="what is two plus two",
                  pieces=(Piece("two plus two is four", tone_ms=0),
                          Piece("", 300.0, 200, words_logprob=logprob)))


@pytest.mark.parametrize(("logprob", "threshold", "by_cascade"), [
    (-2.0, -0.5, True), (-0.1, -0.5, False), (-2.0, None, False), (-0.5, -0.5, False)])
def test_an_unsure_student_hands_its_turn_to_the_cascade(logprob, threshold, by_cascade):
    engine = HybridEngine(FakeEngine(unsure(logprob), accepts_text=False),
                          FakeEngine(TEACHERS), refusal=REFUSAL, min_words_logprob=threshold)
    transcript, outputs, student, cascade = answer(engine, Turn(audio_24k=QUESTION_24K))
    assert transcript == ("Two plus two is four." if by_cascade else "two plus two is four")
    assert ("respond" in cascade.calls) == by_cascade
    audio = np.concatenate([o.audio_24k for o in outputs if o.audio_24k is not None])
    script = TEACHERS if by_cascade else unsure(logprob)
    assert len(audio) == len(script.audio_24k())  # none of the other's audio


@pytest.mark.parametrize(("heard_logprob", "takes_refusal_above", "refusal_taken"), [
    (-1.2, -0.35, False), (None, -0.35, False), (-0.1, None, False), (-0.1, -0.35, True)])
def test_an_unsure_students_turn_refused_by_the_cascade(heard_logprob, takes_refusal_above,
                                                         refusal_taken):
    """Its refusal is taken where its recognizer was sure of what it heard (a question
    outside the domain), else the student answers after all (Whisper misheard)."""
    refusing = Script(user_transcript="what is to plus to", heard_logprob=heard_logprob,
                      pieces=(Piece("Sorry, I can only help with simple math.", tone_ms=0),
                              Piece("", 500.0, 300)))
    engine = HybridEngine(FakeEngine(unsure(-2.0), accepts_text=False), FakeEngine(refusing),
                          refusal=REFUSAL, min_words_logprob=-0.5,
                          refusal_heard_logprob=takes_refusal_above)
    transcript, outputs, student, cascade = answer(engine, Turn(audio_24k=QUESTION_24K))
    assert "respond" in cascade.calls
    audio = np.concatenate([o.audio_24k for o in outputs if o.audio_24k is not None])
    heard = [o.user_transcript for o in outputs if o.user_transcript]
    if refusal_taken:
        assert transcript == "Sorry, I can only help with simple math."
        assert len(audio) == len(refusing.audio_24k()) and heard == ["what is to plus to"]
    else:
        assert transcript == "two plus two is four"
        assert cascade.pieces_made == 1  # its words only: no TTS for a refusal not taken
        assert len(audio) == len(unsure(-2.0).audio_24k())  # all the student's, none of its
        assert heard == ["what is two plus two"]  # the student's hearing, not the cascade's


def test_the_threshold_settings(tmp_path):
    import torch
    from safetensors.torch import save_file

    from voxloop.distill.student.confidence import Routing, write_routing
    from voxloop.models import weights_sha256
    from voxloop.realtime.engines.hybrid import HybridSettings

    def save(words: float, mouth: float) -> None:
        save_file({"text_head.weight": torch.full((2, 3), words),
                   "mouth.out.weight": torch.full((3,), mouth)}, tmp_path / "model.safetensors")

    save(1.0, 1.0)
    folder = str(tmp_path)
    assert HybridSettings().thresholds(folder) == (None, None)  # none measured
    write_routing(tmp_path, Routing(-0.75, -0.35), {"chosen_on": "valid"})
    assert HybridSettings().thresholds(folder) == (-0.75, -0.35)
    assert HybridSettings("none", "auto").thresholds(folder) == (None, -0.35)
    assert HybridSettings(" -1.5 ", "-0.2").thresholds(folder) == (-1.5, -0.2)
    save(1.0, 2.0)  # a new mouth says the same words: what was measured on them holds
    assert HybridSettings().thresholds(folder) == (-0.75, -0.35)
    save(1.5, 2.0)  # new words
    assert HybridSettings("AUTO", "auto").thresholds(folder) == (None, None)
    older = {"min_words_logprob": -0.5, "refusal_heard_logprob": None,
             "weights_sha256": weights_sha256(folder)}  # keyed by the whole file, as before
    (tmp_path / "routing.json").write_text(json.dumps(older))
    assert HybridSettings().thresholds(folder) == (-0.5, None)
    for bad in ("sure", "0.5", "nan", "-inf", ""):
        with pytest.raises(VoxloopError, match="--hybrid-min-words-logprob"):
            HybridSettings(bad).thresholds(folder)
        with pytest.raises(VoxloopError, match="--hybrid-refusal-heard-logprob"):
            HybridSettings("none", bad).thresholds(folder)


def test_a_barge_in_while_the_cascade_is_asked_closes_both_answers():
    """The user talks over the turn as the cascade's first words come, before the hybrid
    took its answer: neither engine's answer goes on, and the cascade's is closed."""
    cancel, closed = threading.Event(), []
    teachers = FakeEngine(Script(pieces=(Piece("Two plus two is four.", tone_ms=0),
                                         Piece("", 500.0, 300))))
    opened = teachers.open

    def open_interrupted():
        session = opened()
        respond = session.respond

        def interrupted(turn, flag):
            try:
                for out in respond(turn, flag):
                    if out.transcript_delta:
                        cancel.set()  # the barge-in, as its first words come
                    yield out
            finally:
                closed.append(True)

        session.respond = interrupted
        return session

    teachers.open = open_interrupted
    engine = HybridEngine(FakeEngine(unsure(-2.0), accepts_text=False), teachers,
                          refusal=REFUSAL, min_words_logprob=-0.5)
    outputs = list(engine.open().respond(Turn(audio_24k=QUESTION_24K), cancel))
    assert not any(o.audio_24k is not None or o.transcript_delta for o in outputs)
    assert closed == [True]


@pytest.mark.parametrize(("student", "cascade", "said"), [
    (unsure(-2.0), Script(fail_after=0), "two plus two is four"),  # its LLM endpoint down
    (REFUSING, Script(fail_after=0), "sorry i can only help with simple math"),
    (unsure(-2.0), Script(pieces=()), "two plus two is four"),  # it gave no words
    (Script(pieces=()), TEACHERS, "Two plus two is four."),  # the student said nothing
])
def test_one_of_the_two_always_answers(student, cascade, said):
    """Where the cascade, asked, fails or says nothing, the student's answer stands; where
    the student writes nothing, the cascade answers."""
    engine = HybridEngine(FakeEngine(student, accepts_text=False), FakeEngine(cascade),
                          refusal=REFUSAL, min_words_logprob=-0.5)
    transcript, outputs, _, asked = answer(engine, Turn(audio_24k=QUESTION_24K))
    assert transcript == said and "respond" in asked.calls
    assert any(o.audio_24k is not None for o in outputs)
