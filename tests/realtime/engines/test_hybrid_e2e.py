"""The hybrid engine (the default) on the real student and the real cascade behind a real
server: a spoken question is answered by the student (its words: lowercase, no
punctuation, from its vocabulary), typed text by the cascade, and a student answer that is
the refusal is replaced by the cascade's answer to the same audio, none of the student's
audio sent; a turn the student is unsure of is the cascade's unless it refuses, and its
refusal is taken only where its Whisper heard surely."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tests.helpers.server import ServerThread, append_event, connect, speech_24k
from tests.realtime.engines.helpers import spoken_turn
from voxloop.distill.teachers.domain.data import load_domain
from voxloop.realtime.engines.base import Turn
from voxloop.realtime.engines.hybrid import plain_words

pytestmark = pytest.mark.slow

QUESTION = "what is the capital of france"
VOICE = "festival:slt-hts"  # one the cascade's Whisper hears well
TEACHERS_ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def question():
    return speech_24k(QUESTION, VOICE)


def serve(native_engine, cascade_engine, **options) -> ServerThread:
    """A real server on the hybrid of the two (``options``: HybridEngine's)."""
    from voxloop.realtime.engines.hybrid import HybridEngine

    return ServerThread(HybridEngine(native_engine, cascade_engine, **options))


def students_answer(native_engine, question: np.ndarray) -> list:
    """The student's own answer to ``question`` (its EngineOutputs), outside any server."""
    session = native_engine.open()
    try:
        return list(session.respond(Turn(audio_24k=question), threading.Event()))
    finally:
        session.close()


def hybrid_answer(native_engine, cascade_engine, question: np.ndarray, **options) -> dict:
    """``question`` committed by hand to a real server on the hybrid (``options``)."""
    server = serve(native_engine, cascade_engine, **options)
    try:
        return asyncio.run(manual_answer(server.url, None, question))
    finally:
        server.stop()


async def manual_answer(url: str, item: dict | None, audio: np.ndarray | None = None) -> dict:
    """Turn detection off; a typed item, or the audio appended and committed; the answer."""
    client = await connect(url)
    await client.recv()
    await client.send({"type": "session.update",
                       "session": {"audio": {"input": {"turn_detection": None}}}})
    await client.until("session.updated")
    if item is not None:
        await client.send({"type": "conversation.item.create", "item": item})
    else:
        await client.send(append_event(audio))
        await client.send({"type": "input_audio_buffer.commit"})
    await client.send({"type": "response.create"})
    done = await client.until("response.done", timeout_s=120)
    await client.ws.close()
    words = "".join(r.event["delta"] for r in client.events
                    if r.event["type"] == "response.output_audio_transcript.delta")
    return {"status": done["response"]["status"], "transcript": words.strip(),
            "audio_s": len(client.answer_audio()) / 24000}


def test_speech_is_answered_by_the_student_and_text_by_the_cascade(native_engine,
                                                                   cascade_engine, question):
    server = serve(native_engine, cascade_engine)
    try:
        spoken = asyncio.run(spoken_turn(server.url, question))
        typed = asyncio.run(manual_answer(server.url, {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": QUESTION}]}))
    finally:
        server.stop()
    print(f"\nhybrid, spoken: {spoken['transcript']!r} ({spoken['first_audio_ms']:.0f} ms after "
          f"speech_stopped); typed: {typed['transcript']!r}")
    assert spoken["status"] == typed["status"] == "completed"
    assert spoken["audio_s"] > 0.5 and typed["audio_s"] > 0.5
    vocab = set(native_engine.tokenizer.vocab["text"])
    assert spoken["transcript"] and set(spoken["transcript"].split()) <= vocab
    assert "." not in spoken["transcript"]  # the student's words, not the cascade's sentence
    assert typed["transcript"] == TEACHERS_ANSWER


def test_a_refused_question_is_answered_by_the_cascade(native_engine, cascade_engine, question):
    """What the student answers to this audio is made its refusal here, so the hybrid must
    hand the same audio to the cascade and send nothing the student said."""
    student = "".join(o.transcript_delta for o in students_answer(native_engine, question))
    result = hybrid_answer(native_engine, cascade_engine, question, refusal=student)
    print(f"\nthe student: {student!r}; the hybrid: {result['transcript']!r}")
    assert result["status"] == "completed" and result["audio_s"] > 0.5
    assert result["transcript"] == TEACHERS_ANSWER


def test_the_student_writes_the_refusal_the_hybrid_listens_for(native_engine, cascade_engine):
    """The student's vocabulary spells the domain's refusal word for word, so its refusal
    compares equal to the one the hybrid listens for (else no turn would be handed on)."""
    from voxloop.realtime.engines.hybrid import HybridEngine

    engine = HybridEngine(native_engine, cascade_engine)
    tokenizer = native_engine.tokenizer
    refusal = engine.refusal
    ids = tokenizer.encode_answer(refusal)
    assert plain_words(" ".join(tokenizer.vocab["text"][i] for i in ids)) == refusal


def test_an_unsure_student_is_answered_by_the_cascade(native_engine, cascade_engine, question):
    """How sure the student is of its words reaches the hybrid with its first audio: with the
    threshold just above that the turn is the cascade's, just below it the student's."""
    outputs = students_answer(native_engine, question)
    sure = [o.words_logprob for o in outputs if o.audio_24k is not None][0]
    assert sure is not None and sure < 0
    for threshold, teachers in ((sure + 1e-3, True), (sure - 1e-3, False)):
        result = hybrid_answer(native_engine, cascade_engine, question,
                               min_words_logprob=threshold)
        print(f"\nthreshold {threshold:.4f}: {result['transcript']!r}")
        assert result["status"] == "completed" and result["audio_s"] > 0.5
        assert (result["transcript"] == TEACHERS_ANSWER) == teachers


def test_the_cascades_refusal_is_taken_only_where_whisper_heard_surely(native_engine,
                                                                       cascade_engine):
    """A question outside the domain: the student, unsure, makes an answer up and the
    cascade refuses; its refusal is the answer where the hybrid takes refusals heard this
    surely, else the student's words are (as where Whisper misheard a question)."""
    from voxloop.audio import float_to_pcm16, pcm16_to_float

    # as the server hears it (pcm16): the student's votes must hear the same samples
    question = pcm16_to_float(float_to_pcm16(speech_24k("the quick brown fox jumps", VOICE)))
    outputs = students_answer(native_engine, question)
    student = "".join(o.transcript_delta for o in outputs)
    sure = [o.words_logprob for o in outputs if o.audio_24k is not None][0]
    refusal = load_domain()["fallback"]
    assert plain_words(student) != plain_words(refusal) and sure < -0.01
    for refusal_heard_logprob, expected in ((None, student), (-5.0, refusal)):
        # any answer below 0 is unsure: through the server the turn is heard as a stream,
        # whose tokens may differ from the whole clip's by a near tie, and so its score
        result = hybrid_answer(native_engine, cascade_engine, question, min_words_logprob=0.0,
                               refusal_heard_logprob=refusal_heard_logprob)
        print(f"\nrefusals taken above {refusal_heard_logprob}: {result['transcript']!r}")
        assert result["status"] == "completed" and result["audio_s"] > 0.5
        assert result["transcript"] == expected
