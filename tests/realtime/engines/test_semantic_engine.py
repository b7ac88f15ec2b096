"""The native engine with a semantic student: the session's streaming semantic ear gives
the offline tokens, its speculative tail is the flush it would make, the batcher answers
as generate() alone, and a spoken turn is answered end to end."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tests.distill.student.semantic_fixtures import (
    examples_with_audio,
    noise_speech,
    real_tokenizer,
    save_semantic_student,
    semantic_packed,
    semantic_student,
    tiny_tokenizer,
    write_dataset,
)
from tests.realtime.engines.helpers import collect as collect_answer
from voxloop.codecs.semantic import save_semantic
from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.user_tokens import as_frames, encode_clips
from voxloop.distill.student.vocab import Tokenizer
from voxloop.realtime.engines.answers import Reason
from voxloop.realtime.engines.base import Turn
from voxloop.realtime.engines.batcher import ContinuousBatcher
from voxloop.realtime.engines.ears import SemanticEar

OPTIONS = SamplingOptions(max_text_tokens=4, max_audio_frames=8)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.mark.parametrize("rate", [25.0, 12.5])
def test_ear_in_random_chunks_gives_the_offline_tokens_and_its_tail_the_flush(rate):
    """Pushed in random chunks, the ear's tokens are the offline ones; at any point its
    tentative tail is what a flush there would add, and the stream goes on unchanged."""
    tokenizer = tiny_tokenizer(rate)
    rng = np.random.default_rng(0)
    for seed in range(3):
        wav = noise_speech(int(rng.integers(8000, 30000)), seed)
        ear, got, start = SemanticEar(tokenizer), [], 0
        while start < len(wav):
            size = int(rng.integers(1, 5000))
            got.append(ear.push(wav[start:start + size]))
            start += size
            if rng.random() < 0.4:
                tail = ear.tentative()()
                heard = np.concatenate([*got, tail], axis=1)[0]
                np.testing.assert_array_equal(heard, encode_clips(tokenizer, [wav[:start]])[0])
        got.append(ear.flush())
        np.testing.assert_array_equal(np.concatenate(got, axis=1)[0],
                                      encode_clips(tokenizer, [wav])[0])
        assert ear.tentative() is None and ear.push(wav[:800]).shape == (1, 0)


@pytest.fixture(scope="module")
def semantic_model(tokenizer):
    data = semantic_packed(tokenizer, examples_with_audio(2))
    return semantic_student(tokenizer, data.vocab), Tokenizer(data.vocab)


@pytest.fixture()
def batcher(semantic_model):
    model, words = semantic_model
    b = ContinuousBatcher(StudentStepper(model, words, OPTIONS), slots=3, max_prefill_frames=4)
    yield b
    b.shutdown()


def collect(answer) -> tuple[list[str], np.ndarray]:
    words, codes, reason = collect_answer(answer)
    assert reason is Reason.COMPLETED, reason
    return words, codes


def alone(semantic_model, tokens: np.ndarray) -> tuple[list[str], np.ndarray]:
    model, words = semantic_model
    result = generate(model, words, tokens, OPTIONS)
    return [words.vocab["text"][i] for i in result.text_ids], result.codes


def tokens(seed: int, frames: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 64, (1, frames))


def test_batcher_answers_a_semantic_student_as_generate_alone(batcher, semantic_model):
    first, second = tokens(1, 11), tokens(2, 7)
    a, b = batcher.open(), batcher.open()
    for start in range(0, 11, 3):
        a.listen(first[:, start:start + 3])
        b.listen(second[:, start:start + 3])
    answer_a, answer_b = a.answer(), b.answer()
    got_a, got_b = collect(answer_a), collect(answer_b)
    for got, want in ((got_a, alone(semantic_model, first)),
                      (got_b, alone(semantic_model, second))):
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])


def test_a_speculative_tail_is_heard_and_rolled_back_with_its_answer(batcher, semantic_model):
    heard, tail, more = tokens(3, 9), tokens(4, 5), tokens(5, 6)
    slot = batcher.open()
    slot.listen(heard)
    answer = slot.answer(lambda: tail)
    got = collect(answer)
    want = alone(semantic_model, np.concatenate([heard, tail], 1))
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    assert answer.flush_ms is not None and len(answer.heard) == 14
    slot.rollback(answer)  # the user went on: the tail is gone with the answer
    slot.listen(more)
    got = collect(slot.answer())
    want = alone(semantic_model, np.concatenate([heard, more], 1))
    assert got[0] == want[0] and np.array_equal(got[1], want[1])


@pytest.fixture(scope="module")
def semantic_engine(tmp_path_factory):
    from voxloop.realtime.engines.native import NativeEngine, NativeSettings

    folder = tmp_path_factory.mktemp("semantic")
    tokenizer = real_tokenizer()
    save_semantic(tokenizer.bottleneck, folder / "tokenizer")
    save_semantic_student(tokenizer, folder / "tokenizer", folder / "student")
    # one ear: these tests hold the streamed answer to generate()'s on one token stream
    engine = NativeEngine(NativeSettings(student=str(folder / "student"), slots=6, votes=1))
    engine.stepper.options = OPTIONS  # short answers (the room kept for long ones)
    yield engine
    engine.batcher.shutdown()


@pytest.fixture(scope="module")
def residual_engine(tmp_path_factory):
    """The same kind of student widened by `voxloop distill residual-levels` (books fitted
    on a small dataset's train turns): it hears four tokens per frame."""
    from voxloop.cli import main
    from voxloop.realtime.engines.native import NativeEngine, NativeSettings

    folder = tmp_path_factory.mktemp("residual")
    tokenizer = real_tokenizer()
    save_semantic(tokenizer.bottleneck, folder / "tokenizer")
    save_semantic_student(tokenizer, folder / "tokenizer", folder / "student")
    (folder / "data" / "shards").mkdir(parents=True)
    write_dataset(folder / "data", {"train": examples_with_audio(24, seed=3)}, {"train": 12})
    assert main(["distill", "residual-levels", str(folder / "student"), str(folder / "wide"),
                 "--data", str(folder / "data"), "--turns", "24"]) == 0
    engine = NativeEngine(NativeSettings(student=str(folder / "wide"), slots=6, votes=1))
    engine.stepper.options = OPTIONS
    yield engine
    engine.batcher.shutdown()


def offline_answer(engine, wav: np.ndarray) -> str:
    """generate()'s words on the offline tokens of the whole ``wav``."""
    tokens = as_frames(encode_clips(engine.semantic, [wav])[0])
    result = generate(engine.stepper.model, engine.tokenizer, tokens, OPTIONS)
    return " ".join(engine.tokenizer.vocab["text"][i] for i in result.text_ids)


def answer_of(session, heard_live: bool = True, audio_24k=None) -> tuple[str, dict]:
    words, timings = [], {}
    for out in session.respond(Turn(audio_24k=audio_24k, heard_live=heard_live),
                               threading.Event()):
        words.append(out.transcript_delta)
        timings.update(out.timings_ms)
    return "".join(words).strip(), timings


@pytest.mark.slow
@pytest.mark.parametrize(("engine_fixture", "levels"), [("semantic_engine", 1),
                                                        ("residual_engine", 4)])
def test_session_hears_with_the_semantic_tokenizer(request, engine_fixture, levels):
    """Heard live in chunks, with a pause the user speaks through and a pause that ends
    the turn: the answer is generate()'s on the offline tokens of the whole audio (one
    token per frame, or four: a student that hears residual levels)."""
    engine = request.getfixturevalue(engine_fixture)
    assert engine.semantic is not None and engine.k_in == engine.semantic.levels == levels
    wav = noise_speech(40000, 7)
    want = offline_answer(engine, wav)
    session = engine.open()
    try:
        session.new_turn()
        session.hear(wav[:21000])
        session.pause()  # a tentative answer from 1.3 s (its last 0.3 s flushed on a copy)
        session.resume()
        for start in range(21000, 40000, 640):
            session.hear(wav[start:start + 640])
        session.pause()
        text, timings = answer_of(session)
        assert text == want and "hear_flush" in timings
        print(f"\nsemantic session: {text!r}; speculative tail flushed in "
              f"{timings['hear_flush']:.1f} ms")
        session.new_turn()  # no pause: the end of the turn flushes the stream itself
        session.hear(wav)
        assert answer_of(session)[0] == want
    finally:
        session.close()


@pytest.mark.slow
@pytest.mark.parametrize("stopped_first", [True, False])
def test_a_turn_that_goes_on_after_its_answer_began_is_answered_whole(semantic_engine,
                                                                     stopped_first):
    """semantic_vad ended the turn at a pause and the answer begun there was sent and cut
    off; the user went on (``resume_turn``, after the response stopped the answer or
    before): that answer is rolled back, the ears hear on, and the answer to the whole
    turn is generate()'s on the offline tokens of all of it."""
    engine = semantic_engine
    wav = noise_speech(40000, 7)
    want = offline_answer(engine, wav)
    session = engine.open()
    try:
        session.new_turn()
        assert not session.resume_turn()  # nothing ended yet
        session.hear(wav[:21000])
        session.pause()
        cancel = threading.Event()
        pieces = session.respond(Turn(heard_live=True), cancel)
        next(pieces)  # the answer is under way
        cancel.set()  # a barge-in
        if stopped_first:
            pieces.close()  # the response's worker stops the answer, then the turn goes on
            assert session.resume_turn()
        else:
            assert session.resume_turn()
            pieces.close()
        for start in range(21000, 40000, 640):
            session.hear(wav[start:start + 640])
        session.pause()
        assert answer_of(session)[0] == want
        session.new_turn()  # no pause: the end of the turn flushes the ears, so a turn
        session.hear(wav)   # that goes on after it is heard again whole
        assert answer_of(session)[0] == want and not session.resume_turn()
    finally:
        session.close()


@pytest.mark.slow
def test_native_engine_answers_a_spoken_turn_with_a_semantic_student(semantic_engine):
    """Real Silero VAD, the real Whisper encoder (untrained codebook), the real server."""
    from tests.helpers.server import ServerThread, connect, silence, speech_24k, stream_realtime

    server = ServerThread(semantic_engine)
    try:
        async def run() -> dict:
            client = await connect(server.url)
            await client.recv()
            await stream_realtime(client, np.concatenate([
                silence(0.3), speech_24k("what is the capital of france", "flite:awb"),
                silence(1.2)]))
            return await client.until("response.done", timeout_s=60)

        done = asyncio.run(run())
    finally:
        server.stop()
    assert done["response"]["status"] == "completed", done
    print(f"\nspoken turn: {done['response']['output']}")


@pytest.mark.slow
@pytest.mark.parametrize("paused", [True, False])
def test_a_live_turn_answered_again_is_answered_from_its_start(semantic_engine, paused):
    """response.cancel then response.create, or a second response.create, on the turn
    just heard: the answer given before is rolled back, and the new one is the whole
    answer again (not the rest of the old one, nor nothing after its end)."""
    engine = semantic_engine
    wav = noise_speech(40000, 7)
    want = offline_answer(engine, wav)
    session = engine.open()
    try:
        session.new_turn()
        session.hear(wav)
        if paused:
            session.pause()  # the first answer is the tentative one
        cancel = threading.Event()
        pieces = session.respond(Turn(heard_live=True), cancel)
        next(pieces)
        cancel.set()  # response.cancel after its first piece
        pieces.close()
        assert answer_of(session)[0] == want
        assert answer_of(session)[0] == want  # asked once more after a whole answer
    finally:
        session.close()


@pytest.mark.slow
def test_push_to_talk_turns_are_answered_in_the_sessions_own_slots(semantic_engine):
    """Turn detection off: nothing is heard live, every turn arrives whole. Each is heard
    in the session's own slots (borrowing none: a few spares are all there is for every
    session), and answered as generate() answers its offline tokens; so too after turn
    detection was on for a while and is off again."""
    from voxloop.audio import resample
    from voxloop.realtime.engines.native import _model_rate

    engine = semantic_engine
    audio_24k = resample(noise_speech(40000, 7), 16000, 24000)
    want = offline_answer(engine, _model_rate(audio_24k))
    session = engine.open()
    try:
        free = len(engine.batcher._free)
        pieces = session.respond(Turn(audio_24k=audio_24k, heard_live=False), threading.Event())
        words = [next(pieces).transcript_delta]
        assert len(engine.batcher._free) == free  # no slot borrowed
        words += [out.transcript_delta for out in pieces]
        assert "".join(words).strip() == want
        assert answer_of(session, heard_live=False, audio_24k=audio_24k)[0] == want  # again
        # turn detection on for a turn heard live, then off again: push to talk once more
        session.set_turn_detection(True)
        session.new_turn()
        session.hear(_model_rate(audio_24k)[:8000])
        session.set_turn_detection(False)
        pieces = session.respond(Turn(audio_24k=audio_24k, heard_live=False), threading.Event())
        words = [next(pieces).transcript_delta]
        assert len(engine.batcher._free) == free  # its own slots again, none borrowed
        words += [out.transcript_delta for out in pieces]
        assert "".join(words).strip() == want
    finally:
        session.close()
