"""The latency benchmark: its player model, and one small real run through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest

from voxloop.bench.latency import underruns
from voxloop.bench.questions import held_out_items
from voxloop.bench.report import summarize


def test_underruns_count_each_time_the_player_runs_dry():
    steady = [(0.04 * i, 0.04) for i in range(50)]  # 40 ms of audio every 40 ms
    assert underruns(steady, jitter_ms=60) == 0
    late = steady[:10] + [(t + 0.3, s) for t, s in steady[10:]]  # one 300 ms hole
    assert underruns(late, jitter_ms=60) == 1
    burst = [(0.0, 2.0), (2.5, 1.0)]  # 2 s at once, the rest 0.5 s after it ran out
    assert underruns(burst, jitter_ms=60) == 1
    assert underruns([], jitter_ms=60) == 0


def plan_items(voices: int = 3, intents: int = 10) -> list:
    """A plan's held-out items as the plan lists them: each voice's questions together."""
    def item(split, voice, k):
        return SimpleNamespace(split=split, user_voice=voice, intent=f"i{k % intents}",
                               prompt_text=f"{split} {voice} {k}")
    return ([item("heldout_voice", f"v{v}", k) for v in range(voices) for k in range(intents + 4)]
            + [item("heldout_phrasing", "train", k) for k in range(2 * intents)])


def test_held_out_questions_are_both_splits_and_every_held_out_voice_alike():
    for count in (1, 2, 7, 20, 23):
        picked = held_out_items(plan_items(), count)
        assert len(picked) == count
        splits = Counter(i.split for i in picked)
        assert splits["heldout_voice"] - splits["heldout_phrasing"] in (0, 1)
        voices = Counter(i.user_voice for i in picked if i.split == "heldout_voice")
        assert max(voices.values()) - min(voices.values(), default=0) <= 1, voices
        assert len(voices) == min(3, splits["heldout_voice"])
        for split in splits:  # no intent twice within a split while another is unused
            intents = Counter(i.intent for i in picked if i.split == split)
            assert max(intents.values()) - min(intents.values()) <= 1 or len(intents) == 10
        assert picked[0].split == "heldout_voice" and picked[1:2] == [
            i for i in picked if i.split == "heldout_phrasing"][:1]


def test_held_out_questions_run_out_with_the_plan():
    everything = held_out_items(plan_items(), 1000)
    assert len(everything) == len(plan_items())
    assert {i.prompt_text for i in everything} == {i.prompt_text for i in plan_items()}


def test_summary_ratio_and_barge_in_only_from_their_turns():
    def row(engine, latency, kind="question", barge=None):
        return {"engine": engine, "sessions": 1, "kind": kind, "latency_ms": latency,
                "engine_ms": latency / 2, "barge_in_ms": barge, "underruns": 0,
                "status": "completed"}

    records = [row("native", 300), row("native", 500), row("native", 9999, "barge_in", 80),
               row("cascade", 1200), row("cascade", 1600)]
    summary = summarize(records)
    native = summary["levels"]["native"][1]
    assert native["latency_p50_ms"] == 400 and native["barge_in_p50_ms"] == 80
    assert summary["cascade_over_native_p50"][1] == pytest.approx(1400 / 400)


def test_a_question_ended_inside_is_timed_from_the_answer_to_all_of_it():
    """The server ended the turn at a gap inside the question and cancelled that answer as
    the question went on (turn_detected): the turn follows the next response; a question
    whose answer was cancelled otherwise failed, a barge-in turn's did not."""
    from voxloop.bench.latency import _Turn

    turn = _Turn(whole=True, stopped_s=1.0, first_audio_s=1.2, response_id="r1")
    turn.arrivals.append((1.2, 0.04))
    cut = {"id": "r1", "status": "cancelled",
           "status_details": {"type": "cancelled", "reason": "turn_detected"}}
    assert turn.went_on(cut) and turn.ended_inside == 1
    assert turn.response_id is None and turn.first_audio_s is None and not turn.arrivals
    assert not _Turn(whole=False, response_id="r1").went_on(cut)  # the barge-in turn's
    assert not turn.went_on({"id": "r2", "status": "cancelled",
                             "status_details": {"reason": "client_cancelled"}})
    rows = [{"engine": "native", "sessions": 1, "kind": kind, "latency_ms": None,
             "engine_ms": None, "barge_in_ms": None, "underruns": 0, "status": status}
            for kind, status in (("question", "cancelled"), ("question", "completed"),
                                 ("barge_in", "cancelled"))]
    assert summarize(rows)["levels"]["native"][1]["failed"] == 1


def test_the_sessions_turn_detection_is_the_openai_object():
    from voxloop.bench.latency import LatencyBenchSettings, session_turn_detection
    from voxloop.errors import VoxloopError

    assert session_turn_detection(LatencyBenchSettings(silence_duration_ms=200)) == {
        "type": "server_vad", "threshold": 0.5, "silence_duration_ms": 200}
    assert session_turn_detection(LatencyBenchSettings(turn_detection="semantic_vad:high")) \
        == {"type": "semantic_vad", "eagerness": "high"}
    for bad in ("semantic_vad", "semantic_vad:fast", "smart_vad"):
        with pytest.raises(VoxloopError, match="semantic_vad"):
            session_turn_detection(LatencyBenchSettings(turn_detection=bad))


def test_a_bad_turn_detection_fails_before_any_server_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "voxloop", "bench", "latency", "--turn-detection", "semantic",
         "--out", str(tmp_path / "bench")], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "semantic_vad:EAGERNESS" in proc.stderr
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("flags, says", [
    (["--turns", "0"], "each session needs at least 1 question"),
    (["--sessions", "2", "0"], "session counts of at least 1"),
    (["--chunk-ms", "0"], "--chunk-ms must be at least 1"),
    (["--turn-detections", "semantic_vad:high", "--turns", "0", "--paused", "0"],
     "no questions"),
])
def test_counts_it_cannot_run_with_fail_before_any_server_starts(tmp_path, flags, says):
    proc = subprocess.run([sys.executable, "-m", "voxloop", "bench", "latency", *flags,
                           "--out", str(tmp_path / "bench")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and says in proc.stderr
    assert not (tmp_path / "bench").exists()


def test_a_turn_detection_comparison_may_time_paused_questions_only():
    from voxloop.bench.latency import LatencyBenchSettings, check_counts

    check_counts(LatencyBenchSettings(turn_detections=("semantic_vad:high",), turns=0))


@pytest.mark.slow
@pytest.mark.parametrize("turn_detection", ["server_vad", "semantic_vad:medium"])
def test_bench_latency_command(tmp_path, turn_detection):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "voxloop", "bench", "latency", "--engines", "native",
         "--sessions", "1", "--turns", "1", "--turn-detection", turn_detection,
         "--out", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| native | 1 |" in proc.stdout
    report = json.loads((out / "latency.json").read_text())
    turns = report["turns"]
    assert [t["kind"] for t in turns] == ["question", "barge_in"]
    assert turns[0]["status"] == "completed" and turns[0]["latency_ms"] > 0
    assert turns[0]["answer_s"] > 0
    assert report["settings"]["turn_detection"] == turn_detection
    assert (out / "latency.png").stat().st_size > 10_000
    log = (out / "server-native.log").read_text()  # each response's stages, for a closer look
    assert "event=response" in log and "first_audio" in log


@pytest.mark.parametrize("engine", ["native", "native-nospec", "native-seanet", "native-one-ear",
                                    "native-votes-all", "native-votes-quick", "cascade"])
def test_every_bench_engine_is_a_valid_serve_command_line(engine):
    from voxloop.bench.latency import ENGINE_ARGS
    from voxloop.cli import build_parser

    args = build_parser().parse_args(["serve", *ENGINE_ARGS[engine]])
    assert args.engine == engine.split("-")[0]
    if engine == "native-seanet":
        assert args.native_decoder == "seanet"
    if engine == "native-one-ear":
        assert args.native_votes == 1
    if engine == "native-votes-all":
        assert args.native_votes == 4 and args.native_voting_sessions == 0
        assert args.native_votes_up_to_sessions == 0
