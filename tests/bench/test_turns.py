"""The turn-detection bench's settings, summary, table and plot (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxloop.bench.turns import turn_detection_event
from voxloop.bench.turns_report import plot, summarize, table
from voxloop.errors import VoxloopError


def test_settings_name_the_openai_turn_detection():
    assert turn_detection_event("semantic_vad:high") == {"type": "semantic_vad",
                                                         "eagerness": "high"}
    assert turn_detection_event("server_vad:500") == {"type": "server_vad",
                                                      "silence_duration_ms": 500}
    for bad in ("semantic_vad:soon", "server_vad:fast", "vad:300", "semantic_vad"):
        with pytest.raises(VoxloopError, match="semantic_vad:EAGERNESS"):
            turn_detection_event(bad)


def _record(setting, kind, latency=None, decided=None, cut_in=None, style=""):
    return {"setting": setting, "kind": kind, "question": "q", "voice": "v", "pause_ms": 0,
            "style": style, "latency_ms": latency, "decided_ms": decided, "cut_in": cut_in,
            "status": "x"}


def test_summary_table_and_plot(tmp_path):
    records = [_record("semantic_vad:medium", "complete", 200.0, 40.0, cut_in=True),
               _record("semantic_vad:medium", "complete", 300.0, 60.0),
               _record("semantic_vad:medium", "complete"),  # timed out: not answered
               _record("semantic_vad:medium", "paused", cut_in=False, style="one_breath"),
               _record("semantic_vad:medium", "paused", cut_in=True, style="apart"),
               _record("semantic_vad:medium", "paused", cut_in=True, style="apart"),
               _record("server_vad:500", "complete", 700.0, 560.0),
               _record("server_vad:500", "paused", cut_in=True, style="one_breath")]
    summary = summarize(records)
    medium = summary["semantic_vad:medium"]
    assert (medium["complete"], medium["answered"], medium["complete_cut_ins"]) == (3, 2, 1)
    assert medium["latency_p50_ms"] == 250.0 and medium["decided_p95_ms"] == pytest.approx(59)
    assert (medium["cut_ins"], medium["paused"]) == (2, 3)
    assert medium["by_style"]["one_breath"]["cut_in_rate"] == 0.0
    assert medium["by_style"]["apart"] == {"paused": 2, "cut_ins": 2, "cut_in_rate": 1.0}
    assert summary["server_vad:500"]["by_style"]["one_breath"]["cut_in_rate"] == 1.0
    text = table(summary)
    assert "paused one breath | false cut-ins, paused apart |" in text
    assert "| semantic_vad:medium | 2/3 | 1/3 | 250 / 295 | 50 / 59 | 0/1 (0 %) | 2/2 (100 %) |" \
        in text
    assert "| server_vad:500 | 1/1 | 0/1 | 700 / 700 | 560 / 560 | 1/1 (100 %) | 0/0 (-) |" in text
    complete_only = table(summarize(records[:3]))
    assert complete_only.splitlines()[0].endswith("p50 / p95 ms (audio time) |")
    assert complete_only.splitlines()[-1] == \
        "| semantic_vad:medium | 2/3 | 1/3 | 250 / 295 | 50 / 59 |"
    plot(summary, tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_one_run_over_a_real_server(monkeypatch):
    """run_turn_bench against a server on the fake engine with a fake end-of-turn model
    that is never sure (P 0): semantic_vad:high waits 2 s at every pause, so the 0.9 s
    pause is no cut-in; server_vad:200 cuts it."""
    from tests.helpers.end_of_turn import FakeEndOfTurn, speech_24k
    from tests.helpers.server import ServerThread
    from tests.realtime.fakes import FakeEngine
    from voxloop.bench.turns import run_turn_bench
    from voxloop.codecs.end_of_turn import DEFAULT_END_OF_TURN
    from voxloop.realtime import semantic_turns

    monkeypatch.setitem(semantic_turns._models, DEFAULT_END_OF_TURN, FakeEndOfTurn(0.0))
    head, tail = speech_24k("what is seven"), speech_24k("times three")
    gap = np.zeros(int(0.9 * 24000), np.float32)
    complete = [("what is seven times three", "flite:kal16",
                 np.concatenate([head, tail]))]
    paused = [("what is seven ... times three", "flite:kal16", 900, "apart",
               np.concatenate([head, gap, tail]), len(head) + len(gap))]
    server = ServerThread(FakeEngine())
    try:
        records = run_turn_bench(server.url, ("semantic_vad:high", "server_vad:200"), complete,
                                 paused, chunk_ms=40, timeout_s=20, progress=lambda *_: None)
    finally:
        server.stop()
    by = {(r.setting, r.kind): r for r in records}
    assert by["semantic_vad:high", "paused"].cut_in is False
    assert by["server_vad:200", "paused"].cut_in is True
    for setting in ("semantic_vad:high", "server_vad:200"):
        record = by[setting, "complete"]
        assert record.latency_ms is not None and record.status in ("cancelled", "completed")
    assert by["semantic_vad:high", "complete"].decided_ms > 1500  # P 0: the whole 2 s
    assert by["server_vad:200", "complete"].decided_ms < 1000


@pytest.mark.slow  # real TTS of a few held-out questions
def test_paused_questions_are_the_same_cuts_in_both_styles():
    """Each question once per style, with the same cut and pause; the one-breath audio is
    the whole question's (its first part is not the first part spoken alone), and the
    second part starts right after the pause."""
    from voxloop.bench.turns import paused_questions

    paused = paused_questions(2, seed=3)
    assert [q[3] for q in paused] in (["one_breath", "apart"] * 2,
                                      ["one_breath", "apart", "apart", "apart"],
                                      ["apart", "apart", "one_breath", "apart"])
    for breath, apart in zip(paused[::2], paused[1::2], strict=True):
        assert breath[:3] == apart[:3] and " ... " in breath[0]
        for *_, pause_ms, _style, audio, onset in (breath, apart):
            gap = audio[onset - pause_ms * 24:onset]
            assert np.abs(gap).max() == 0 and np.abs(audio[onset:onset + 480]).max() > 0
        if breath[3] == "one_breath":
            assert breath[5] != apart[5]  # a first part of another length


def test_every_question_is_a_turn_of_its_own():
    """The silence before each question outlasts semantic_vad's resume window, so no
    question is heard as going on with the one before."""
    from voxloop.bench.turns import BETWEEN_QUESTIONS_MS
    from voxloop.realtime.semantic_turns import RESUMES_WITHIN_MS

    assert BETWEEN_QUESTIONS_MS > RESUMES_WITHIN_MS


@pytest.mark.parametrize("kind", ["complete", "paused"])
def test_a_late_turn_end_of_the_question_before_is_not_this_ones(kind):
    """The question before's turn can end again after this one started (it ended at a dip
    in its last word and went on as the speech came back): that turn end is stamped before
    this question's first sample, so it is cancelled and skipped, not counted as a cut-in."""
    import asyncio

    from voxloop.bench.turns import _Detector

    class Socket:
        def __init__(self, events: asyncio.Queue):
            self.events, self.sent = events, []

        async def send(self, message: str) -> None:
            event = json.loads(message)
            self.sent.append(event["type"])
            if event["type"] == "response.cancel":
                self.events.put_nowait({"type": "response.done", "response": {
                    "id": event["response_id"], "status": "cancelled"}})
                if event["response_id"] == "late":  # then this question's turn ends
                    for later in this_question:
                        self.events.put_nowait(later)

    this_question = ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 11300},
                     {"type": "response.created", "response": {"id": "mine"}},
                     {"type": "response.output_audio.delta", "response_id": "mine", "_t": 1e9})

    async def run():
        detector = _Detector("ws://unused", "semantic_vad:medium", chunk_ms=20, timeout_s=5)
        detector.ws = Socket(detector.events)
        detector.sent_samples = 10 * 24000  # this question starts at 10,000 ms
        audio = np.concatenate([np.full(12000, 0.3, np.float32), np.zeros(6000, np.float32),
                                np.full(12000, 0.3, np.float32)])
        for event in ({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 9800},
                      {"type": "response.created", "response": {"id": "late"}}):
            detector.events.put_nowait(event)
        if kind == "complete":
            record = await detector._complete("q", "v", audio)
        else:
            record = await detector._paused("q ... q", "v", 250, "apart", audio, 18000)
        return record, detector.ws.sent

    record, sent = asyncio.run(run())
    assert record.status == "cancelled" and record.late_turn_ends == 1
    assert record.cut_in is (None if kind == "complete" else False)
    assert sent.count("response.cancel") == 2  # the late one's and this question's answer
    if kind == "complete":
        assert record.decided_ms == pytest.approx(11300 - (10_000 + 1250), abs=1)


def test_a_paused_question_never_ended_is_no_cut_in_and_no_success():
    """A server that never ends the turn leaves the paused question out of the cut-in
    rate (counted in ``paused_timeouts``), not in it as a question kept whole."""
    import asyncio

    from voxloop.bench.turns import _Detector

    class Silent:
        async def send(self, message: str) -> None:
            pass

    async def run():
        detector = _Detector("ws://unused", "semantic_vad:medium", chunk_ms=20, timeout_s=0.5)
        detector.ws = Silent()
        audio = np.concatenate([np.full(2400, 0.3, np.float32), np.zeros(2400, np.float32),
                                np.full(2400, 0.3, np.float32)])
        return await detector._paused("q ... q", "v", 100, "apart", audio, 4800)

    record = asyncio.run(run())
    assert record.status == "timeout" and record.cut_in is None
    summary = summarize([vars(record) | {"latency_ms": None, "decided_ms": None}])
    assert summary["semantic_vad:medium"]["paused_timeouts"] == 1
    assert summary["semantic_vad:medium"]["paused"] == 0
