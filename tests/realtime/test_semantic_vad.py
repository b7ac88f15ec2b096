"""semantic_vad (issue 15): the session configuration as the OpenAI types spell it, the
wait the end-of-turn model sets, and turns through real Silero on synthetic speech with a
fake end-of-turn model (P fixed), so each test runs in about a second."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.helpers.end_of_turn import FakeEndOfTurn, speech_24k
from tests.realtime.fakes import FakeEngine, Harness, Script, run_session
from voxloop.audio import resample
from voxloop.codecs.end_of_turn import DEFAULT_END_OF_TURN, EAGERNESS_CAP_MS, wait_ms
from voxloop.realtime import semantic_turns
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def fake_model(monkeypatch):
    def install(p_finished: float) -> FakeEndOfTurn:
        model = FakeEndOfTurn(p_finished)
        monkeypatch.setitem(semantic_turns._models, DEFAULT_END_OF_TURN, model)
        return model
    return install


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * WIRE_RATE_HZ), np.float32)


def semantic(eagerness: str | None = None, **fields) -> dict:
    td = {"type": "semantic_vad", **fields}
    if eagerness is not None:
        td["eagerness"] = eagerness
    return {"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
        "turn_detection": td}}}}


def test_semantic_vad_is_accepted_and_echoed():
    async def test(h: Harness):
        assert h.engine_session.quick_turns is False  # server_vad: the engine may vote
        assert h.engine_session.live is True
        await h.send(semantic("high"))
        td = (await h.until("session.updated"))["session"]["audio"]["input"]["turn_detection"]
        assert td == {"type": "semantic_vad", "eagerness": "high", "create_response": True,
                      "interrupt_response": True}
        assert h.engine_session.quick_turns is True  # told: turns end soon after speech
        await h.send(semantic(create_response=False))  # eagerness kept, one field changed
        td = (await h.until("session.updated"))["session"]["audio"]["input"]["turn_detection"]
        assert td["eagerness"] == "high" and td["create_response"] is False
        await h.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 200}}}}})
        td = (await h.until("session.updated"))["session"]["audio"]["input"]["turn_detection"]
        assert td["type"] == "server_vad" and td["silence_duration_ms"] == 200
        assert h.engine_session.quick_turns is False
        await h.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": None}}}})
        await h.until("session.updated")
        assert (h.engine_session.live, h.engine_session.quick_turns) == (False, False)

    run_session(test, manual=False)


def test_beta_clients_select_semantic_vad_too():
    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"turn_detection": {
            "type": "semantic_vad", "eagerness": "low"}}})
        td = (await h.until("session.updated"))["session"]["turn_detection"]
        assert td["type"] == "semantic_vad" and td["eagerness"] == "low"

    run_session(test, beta=True, manual=False)


@pytest.mark.parametrize("td, code, param, words", [
    ({"type": "semantic_vad", "eagerness": "fast"}, "invalid_value",
     "turn_detection.eagerness", "'low', 'medium', 'high', 'auto'"),
    ({"type": "semantic_vad", "eagerness": 2}, "invalid_value", "turn_detection.eagerness",
     "got 2"),
    ({"type": "semantic_vad", "create_response": "yes"}, "invalid_value",
     "turn_detection.create_response", "true or false"),
    ({"type": "smart_vad"}, "unsupported_value", "turn_detection.type", "'semantic_vad'"),
    ({"type": "semantic_vad", "silence_duration_ms": 200}, "invalid_value",
     "turn_detection.silence_duration_ms", "a server_vad parameter"),
])
def test_bad_values_are_a_clear_error_and_change_nothing(td, code, param, words):
    async def test(h: Harness):
        await h.send({"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": td}}}})
        error = (await h.next())["error"]
        assert (error["code"], error["param"]) == (code, param)
        assert words in error["message"]
        assert h.session.config.turn_detection.wire()["type"] == "server_vad"

    run_session(test, manual=False)


def test_the_wait_falls_as_p_rises_and_each_eagerness_caps_it():
    for eagerness, cap_ms in EAGERNESS_CAP_MS.items():
        waits = [wait_ms(p, eagerness) for p in np.linspace(0, 1, 21)]
        assert waits[0] == cap_ms and waits[-1] == 0
        assert waits == sorted(waits, reverse=True)
    assert EAGERNESS_CAP_MS == {"low": 8000, "medium": 4000, "high": 2000, "auto": 4000}
    assert wait_ms(0.95, "medium") <= 10 and wait_ms(0.5, "medium") == 1000


@pytest.mark.parametrize("p_finished", [0.99, 0.6])
def test_a_pause_is_decided_when_asked_or_before_the_next_window(p_finished):
    """The model is asked only by ``decide`` (the session calls it after starting the
    tentative answer) or, if nobody does, before the next window is heard: the same events
    at the same times either way."""
    from voxloop.realtime.semantic_turns import SemanticTurnDetector
    from voxloop.realtime.wire.session_config import SemanticVad

    signal = resample(np.concatenate([silence(0.5), speech_24k("what is seven"), silence(0.4),
                                      speech_24k("times three"), silence(1.5)]),
                      WIRE_RATE_HZ, 16000)
    runs = {}
    for deciding in (True, False):
        model = FakeEndOfTurn(p_finished)
        detector = SemanticTurnDetector(SemanticVad(eagerness="medium"), model=model)
        events = []
        for i in range(0, len(signal), 320):
            events += detector.push(signal[i:i + 320])
            if deciding and detector.undecided:
                asked = len(model.asked_at_samples)
                events += detector.decide()
                assert len(model.asked_at_samples) == asked + 1
        runs[deciding] = events, model.asked_at_samples
    events, asked = runs[True]
    assert runs[False] == runs[True]
    kinds = [e.kind for e in events]
    assert kinds.count("speech_paused") == len(asked) >= 2 and kinds[-1] == "speech_stopped"
    stops = [e for e in events if e.kind == "speech_stopped"]
    # P 0.99 waits 0 ms: every pause ends a turn; P 0.6 waits 640: the 0.4 s pause does not
    assert len(stops) == (len(asked) if p_finished > 0.9 else 1)
    assert all(e.audio_ms == e.speech_ms + wait_ms(p_finished, "medium") for e in stops)


def test_a_finished_question_ends_the_turn_at_once(fake_model):
    model = fake_model(0.99)
    question = speech_24k()
    asked = []  # the engine's calls so far, each time the model is asked

    async def test(h: Harness):
        await h.send(semantic("medium"))
        await h.until("session.updated")
        model.on_ask = lambda: asked.append(h.engine_session.calls_but_hear())
        await h.append(np.concatenate([silence(0.3), question, silence(0.8)]))
        started = await h.until("input_audio_buffer.speech_started")
        stopped = await h.until("input_audio_buffer.speech_stopped")
        assert (await h.until("response.done"))["response"]["status"] == "completed"
        h.marks = started, stopped

    h = run_session(test, manual=False)
    started, stopped = h.marks
    end_ms = 300 + len(question) * 1000 // WIRE_RATE_HZ
    # server_vad would stop at end + 300 ms + Silero's lag; P 0.99 waits 0.4 ms
    assert end_ms - 200 <= stopped["audio_end_ms"] <= end_ms + 200
    assert model.asked_at_samples  # asked at the pause, having heard the turn's audio
    heard_ms = model.asked_at_samples[0] * 1000 // 16000
    assert heard_ms >= stopped["audio_end_ms"] - started["audio_start_ms"] - 100
    assert h.engine_session.turns[0].heard_live
    # the tentative answer was started before the model was asked (they run at once), and
    # is the one sent: no answer started after the turn ended
    assert asked[0][-1] == "pause" and "respond" not in asked[0]
    assert h.engine_session.calls_but_hear()[:3] == ["new_turn", "pause", "respond"]


def test_an_unfinished_pause_waits_and_the_speculation_is_rolled_back(fake_model):
    fake_model(0.0)  # never sure: every pause waits the whole cap (high: 2 s)
    part = speech_24k("what is seven")

    async def test(h: Harness):
        await h.send(semantic("high"))
        await h.until("session.updated")
        await h.append(np.concatenate([silence(0.3), part, silence(1.2), part,
                                       silence(2.6)]))
        stopped = await h.until("input_audio_buffer.speech_stopped")
        await h.until("response.done")
        h.stopped = stopped

    h = run_session(test, manual=False)
    second_end_ms = 300 + 2 * len(part) * 1000 // WIRE_RATE_HZ + 1200
    assert second_end_ms + 2000 - 200 <= h.stopped["audio_end_ms"] <= second_end_ms + 2200
    stops = [e for e in h.events if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(stops) == 1  # the 1.2 s pause did not end the turn
    calls = h.engine_session.calls_but_hear()
    assert calls.count("respond") == 1 and "resume" in calls  # speculation rolled back
    assert calls.index("resume") < calls.index("respond")


def test_the_official_openai_client_selects_semantic_vad(fake_model):
    """The `openai` package, unmodified: session.update to semantic_vad, the typed
    session.updated says so; a bad eagerness comes back as an error event."""
    from openai import OpenAI

    from tests.helpers.server import ServerThread

    fake_model(0.9)
    server = ServerThread(FakeEngine(), turn_detection="server_vad")
    try:
        client = OpenAI(api_key="unused", websocket_base_url=server.url.rsplit("/", 1)[0])
        with client.realtime.connect(model="voxloop") as conn:
            created = conn.recv()
            assert created.session.audio.input.turn_detection.type == "server_vad"
            conn.session.update(session={"type": "realtime", "audio": {"input": {
                "turn_detection": {"type": "semantic_vad", "eagerness": "low"}}}})
            updated = conn.recv()
            assert updated.type == "session.updated"
            td = updated.session.audio.input.turn_detection
            assert (td.type, td.eagerness, td.create_response) == ("semantic_vad", "low", True)
            conn.session.update(session={"type": "realtime", "audio": {"input": {
                "turn_detection": {"type": "semantic_vad", "eagerness": "soon"}}}})
            error = conn.recv()
            assert error.type == "error" and error.error.param == "turn_detection.eagerness"
    finally:
        server.stop()


@pytest.mark.parametrize("flag, expected", [
    (None, {"type": "semantic_vad", "eagerness": "auto", "create_response": True,
            "interrupt_response": True}),
    ("server_vad", {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                    "silence_duration_ms": 300, "create_response": True,
                    "interrupt_response": True}),
])
def test_serve_turn_detection_sets_the_default(fake_model, flag, expected):
    """Sessions start with semantic_vad (medium eagerness, as auto); ``voxloop serve
    --turn-detection server_vad`` starts them with Silero's fixed silence instead."""
    import asyncio

    from tests.helpers.server import ServerThread, connect

    fake_model(0.9)
    server = ServerThread(FakeEngine(), **({"turn_detection": flag} if flag else {}))

    async def created() -> dict:
        client = await connect(server.url)
        event = await client.recv()
        await client.ws.close()
        return event

    try:
        td = asyncio.run(created())["session"]["audio"]["input"]["turn_detection"]
    finally:
        server.stop()
    assert td == expected


@pytest.mark.slow  # the bundled end-of-turn model (Whisper tiny.en's encoder under it)
def test_the_bundled_model_hears_whether_a_question_is_finished():
    import torch

    model = semantic_turns.end_of_turn_model()

    def p_finished(text: str) -> float:
        audio = resample(speech_24k(text), WIRE_RATE_HZ, 16000)
        audio = np.concatenate([np.zeros(3200, np.float32), audio, np.zeros(1600, np.float32)])
        state = model.init_state()
        model.push(state, torch.from_numpy(audio))
        return model.probability(state)

    pairs = [("what is seven times three", "what is seven times"),
             ("how many legs does a spider have", "how many legs does a"),
             ("convert 5 miles to kilometers", "convert 5 miles to")]
    for complete, cut in pairs:
        assert p_finished(complete) > 0.5 > p_finished(cut), (complete, cut)


@pytest.mark.parametrize("gap_s, engine_keeps, interrupt", [
    (0.6, True, True), (0.6, False, True), (2.0, True, True), (0.6, True, False)])
def test_speech_soon_after_a_turn_ended_goes_on_with_it(fake_model, gap_s, engine_keeps,
                                                        interrupt):
    """P 0.99 ends the turn at every pause (the gaps between flite's words too) and it is
    answered; the user goes on. Within RESUMES_WITHIN_MS of the speech's end that is the
    same turn: the model judges all of it as one, the engine keeps what it heard
    (``resume_turn``; one that cannot hears the whole turn in ``respond``), and one user
    item holds it all, each earlier part's items deleted. Later, or where speech does not
    interrupt answers (``interrupt_response`` off), it is a new turn."""
    model = fake_model(0.99)
    first, second = speech_24k("if I mix blue and yellow"), speech_24k("what do I get")

    async def test(h: Harness):
        await h.send(semantic("medium", interrupt_response=interrupt))
        await h.until("session.updated")
        await h.append(np.concatenate([silence(0.3), first, silence(gap_s), second,
                                       silence(0.8)]))
        while await h.drain(0.5):
            pass

    script = replace(Script(), resumes_turns=engine_keeps)
    h = run_session(test, engine=FakeEngine(script), manual=False)
    kinds = [e["type"] for e in h.events]
    assert "error" not in kinds
    committed = [e["item_id"] for e in h.events if e["type"] == "input_audio_buffer.committed"]
    deleted = [e["item_id"] for e in h.events if e["type"] == "conversation.item.deleted"]
    answered = {e["item"]["id"] for e in h.events if e["type"] == "response.output_item.added"}
    users = [i for i in h.session.items.values() if i.role == "user"]
    answers = [i for i in h.session.items.values() if i.role == "assistant"]
    calls = h.engine_session.calls_but_hear()
    first_ms, second_ms = (len(a) * 1000 // WIRE_RATE_HZ for a in (first, second))
    assert kinds.count("response.done") >= 2 and calls[:3] == ["new_turn", "pause", "respond"]
    # each part that went on: its user item and any answer begun to it, deleted
    went_on = set(committed) - {u.id for u in users}
    assert went_on <= set(deleted) and set(deleted) - went_on <= answered
    assert len(deleted) == len(set(deleted)) and len(answers) <= len(users)
    if not interrupt:  # no part went on with another: every one is a turn
        assert not deleted and "resume_turn" not in calls and len(users) == len(committed)
        return
    if gap_s * 1000 > semantic_turns.RESUMES_WITHIN_MS:  # two turns
        assert len(users) == 2 and users[1].audio_ms < second_ms + 1000
        assert model.asked_at_samples[-1] < (second_ms + 500) * 16
        return
    assert [u.id for u in users] == committed[-1:]
    whole_ms = first_ms + int(gap_s * 1000) + second_ms
    assert whole_ms <= users[0].audio_ms <= whole_ms + 600  # the first part, the gap, the rest
    assert model.asked_at_samples[-1] >= (first_ms + second_ms) * 16  # it heard all of it
    turn = h.engine_session.turns[-1]
    assert len(turn.audio_24k) == users[0].audio_ms * WIRE_RATE_HZ // 1000
    # an engine that could not go on hears the rest as a turn of its own: not asked again
    assert calls.count("resume_turn") == (len(went_on) if engine_keeps else 1)
    assert calls.count("new_turn") == (1 if engine_keeps else 1 + len(went_on))
    assert turn.heard_live is engine_keeps  # else answered from the whole turn's audio


def test_turns_resume_within_the_longest_pause_the_end_of_turn_data_has():
    from voxloop.distill.data.turn_data import PAUSE_MS
    from voxloop.realtime.turns import TurnDetector

    assert PAUSE_MS[1] == semantic_turns.RESUMES_WITHIN_MS
    assert TurnDetector.RESUMES_WITHIN_MS == 0  # server_vad: every turn is one, as OpenAI's


def test_an_end_of_turn_model_that_cannot_load_is_an_error_and_changes_nothing(monkeypatch):
    """semantic_vad asked for where its model does not load: an ``error`` event, and the
    session listens as before (server_vad); a detector made anyway fails before any state
    of its own changes."""
    from voxloop.errors import VoxloopError
    from voxloop.realtime.wire.session_config import SemanticVad

    def cannot_load(name=None):
        raise VoxloopError("no end-of-turn model at 'voxloop-end-of-turn'")

    monkeypatch.setattr(semantic_turns, "end_of_turn_model", cannot_load)

    async def test(h: Harness):
        await h.send(semantic("high"))
        error = await h.until("error")
        assert error["error"]["code"] == "semantic_vad_unavailable"
        assert "no end-of-turn model" in error["error"]["message"]
        assert h.engine_session.quick_turns is False and h.engine_session.live is True
        assert type(h.session._detector).__name__ == "TurnDetector"

    run_session(test, manual=False)
    detector = semantic_turns.SemanticTurnDetector(SemanticVad())
    with pytest.raises(VoxloopError, match="no end-of-turn model"):
        detector.push(resample(speech_24k(), WIRE_RATE_HZ, 16000))
    assert not detector.speaking and detector._stream is None


def test_a_resumed_turn_is_heard_with_the_whole_pause_in_it():
    """Sure it is finished, the model ends the turn at once; the user goes on 0.9 s later
    (within the resume window): the stream it goes on with hears the pause whole, as the
    end-of-turn data's paused questions have it, not only the onset's prefix padding."""
    from voxloop.realtime.wire.session_config import SemanticVad

    part = resample(speech_24k("what is seven"), WIRE_RATE_HZ, 16000)
    gap = np.zeros(int(0.9 * 16000), np.float32)
    detector = semantic_turns.SemanticTurnDetector(SemanticVad(eagerness="high"),
                                                   model=FakeEndOfTurn(1.0))
    events = detector.push(np.concatenate([np.zeros(4800, np.float32), part, gap, part]))
    starts = [e for e in events if e.kind == "speech_started"]
    assert len(starts) >= 2 and all(s.resumes for s in starts[1:])  # (words apart too)
    stream = detector._stream if detector._stream is not None else detector._ended_stream
    heard_ms = 1000 * sum(stream) / 16000  # from the first onset's padding on
    assert heard_ms >= detector.judged_ms - starts[0].audio_ms - 2 * 32


def test_a_semantic_detector_retunes_in_place_and_refuses_another_type():
    from voxloop.realtime.wire.session_config import SemanticVad, TurnDetection

    detector = semantic_turns.SemanticTurnDetector(SemanticVad(), model=FakeEndOfTurn(0.5))
    padding = detector.settings.prefix_padding_ms
    assert detector.retune(SemanticVad(eagerness="high", create_response=False))
    assert detector.semantic.eagerness == "high" and not detector.settings.create_response
    assert detector.settings.prefix_padding_ms == padding  # its own Silero settings stay
    assert not detector.retune(TurnDetection()) and not detector.retune(None)
