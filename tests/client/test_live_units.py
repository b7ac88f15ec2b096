"""The live client's parts without a sound card: jitter buffer, conversation, echo."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from voxloop.client.audio_io import PlayedTimeline
from voxloop.client.conversation import Conversation, InputClock
from voxloop.client.echo import Ducker, EchoMeter, EchoSettings, dbfs, make_echo_control
from voxloop.client.jitter import JitterBuffer, JitterSettings
from voxloop.realtime.wire.session_config import SemanticVad

RATE_HZ = 24000
BLOCK = 480  # 20 ms


def tone(ms: int, amplitude: float = 0.3, hz: float = 440.0) -> np.ndarray:
    t = np.arange(ms * RATE_HZ // 1000) / RATE_HZ
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_jitter_waits_for_the_prebuffer_then_plays_in_order():
    jb = JitterBuffer(JitterSettings(prebuffer_ms=60))
    jb.push("a", tone(40))
    assert not jb.pull(BLOCK, 1.0).any()  # 40 ms < 60 ms prebuffer: silence
    jb.push("a", tone(40))
    out = jb.pull(BLOCK, 2.0)
    np.testing.assert_array_equal(out, tone(80)[:BLOCK])
    assert jb.items["a"].first_play_s == 2.0 and jb.items["a"].played_samples == BLOCK


def test_jitter_counts_an_underrun_only_before_the_audio_is_complete():
    jb = JitterBuffer(JitterSettings(prebuffer_ms=20))
    jb.push("a", tone(30))
    jb.pull(BLOCK, 0.0)
    jb.pull(BLOCK, 0.02)  # 10 ms left, more is due: an underrun
    assert jb.underruns == 1
    jb.push("a", tone(10))
    jb.complete("a")
    jb.pull(BLOCK, 0.04)  # a short tail plays at once and running dry is the end
    jb.pull(BLOCK, 0.06)
    assert jb.underruns == 1 and not jb.audible


def test_jitter_flush_reports_what_was_played():
    jb = JitterBuffer(JitterSettings(prebuffer_ms=20))
    jb.push("a", tone(500))
    for k in range(5):
        jb.pull(BLOCK, k * 0.02)
    assert jb.flush() == ("a", 5 * BLOCK)
    assert not jb.audible and not jb.pull(BLOCK, 1.0).any()
    assert jb.flush() == (None, 0)  # nothing playing: nothing to cut


def _delta(item_id: str, samples: np.ndarray) -> dict:
    pcm = (samples * 32767).astype("<i2").tobytes()
    return {"type": "response.output_audio.delta", "item_id": item_id, "response_id": "r",
            "delta": base64.b64encode(pcm).decode()}


def test_barge_in_flushes_and_truncates_at_the_played_ms():
    c = Conversation(JitterBuffer(JitterSettings(prebuffer_ms=20)))
    c.on_event({"type": "response.created"})
    c.on_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0})
    c.on_event(_delta("item1", tone(1000)))
    for k in range(25):  # 500 ms played
        c.jitter.pull(BLOCK, k * 0.02)
    assert c.state == "assistant speaking"
    replies = c.on_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0})
    assert replies == [{"type": "conversation.item.truncate", "item_id": "item1",
                        "content_index": 0, "audio_end_ms": 500}]
    assert c.state == "user speaking" and c.barge_ins == 1
    assert c.turns[-1].truncated_ms == 500
    assert c.turns[-1].cut_span_ms == 500  # no stall: the speaker took as long as it played
    c.on_event(_delta("item1", tone(100)))  # in flight when the user spoke: dropped
    assert not c.jitter.audible


def test_a_turn_the_server_merges_is_one_turn_not_an_interruption():
    """semantic_vad: the user went on after a pause the server took for the end; it
    withdraws the first part and its begun answer (conversation.item.deleted)."""
    c = Conversation(JitterBuffer(JitterSettings(prebuffer_ms=20)))
    c.on_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0,
                "item_id": "user1"})
    c.on_event(_delta("answer1", tone(1000)))
    c.on_event({"type": "response.output_audio_transcript.delta", "item_id": "answer1",
                "delta": "A spi"})
    c.jitter.pull(BLOCK, 0.0)
    c.on_event({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0})
    c.on_event({"type": "response.output_audio_transcript.done", "item_id": "answer1",
                "transcript": "A spider has eight legs."})
    assert c.turns[-1].answer_transcript == "A spi"  # what was heard before the cut
    c.on_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900,
                "item_id": "user2"})
    for item_id in ("user1", "answer1"):
        c.on_event({"type": "conversation.item.deleted", "item_id": item_id})
    assert [t.user_item_id for t in c.turns] == ["user2"] and c.barge_ins == 0
    assert "its first part's answer is withdrawn" in c.log[-1]


def _heard_at_12_s(turn_detection: dict) -> Conversation:
    """A turn whose speech_stopped says 1500 ms, its first answer sample played at 12 s."""
    c = Conversation(JitterBuffer(JitterSettings(prebuffer_ms=20)))
    c.on_event({"type": "session.created", "session": {"audio": {"input": {
        "turn_detection": turn_detection}}}})
    for k in range(100):  # 2 s of mic, block k captured at 10 + k * 20 ms
        c.clock.sent(BLOCK, 10.0 + k * 0.02)
    c.on_event({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1500})
    c.on_event(_delta("item1", tone(100)))
    c.jitter.pull(BLOCK, 12.0)
    c.refresh()
    return c


def test_latency_runs_from_the_end_of_speech_to_the_first_sample_heard():
    c = _heard_at_12_s({"silence_duration_ms": 300})
    assert c.turns[-1].latency_ms == pytest.approx(1000 * (12.0 - 11.2))


def test_under_semantic_vad_latency_runs_from_the_end_of_the_turn():
    """No fixed silence to take off: the server's audio_end_ms is the turn's end."""
    c = _heard_at_12_s({"type": "semantic_vad", "eagerness": "auto"})
    assert c.turns[-1].latency_ms == pytest.approx(1000 * (12.0 - 11.5))
    assert "end of turn -> answer heard" in c.log[-1]


def test_input_clock_maps_ms_to_capture_time():
    clock = InputClock()
    clock.sent(BLOCK, 5.0)
    clock.sent(BLOCK, 5.02)
    assert clock.time_at(30) == pytest.approx(5.03)
    assert clock.time_at(0) == 5.0


def test_played_timeline_returns_what_was_heard_at_capture_time():
    timeline = PlayedTimeline(lead_ms=0)
    audio = np.arange(40 * BLOCK, dtype=np.float32)
    for k in range(40):  # block k heard from 1.0 + k * 20 ms
        timeline.put(audio[k * BLOCK:(k + 1) * BLOCK], 1.0 + k * 0.02)
    for j in range(30):  # the mic on the same clock; one reading 0.1 ms off
        far, aligned = timeline.take(BLOCK, 1.0 + j * 0.02 + (0.0001 if j == 27 else 0))
        np.testing.assert_array_equal(far, audio[j * BLOCK:(j + 1) * BLOCK])
        assert aligned == (j >= 25)  # once both sides' clocks are calibrated (0.5 s)
    assert timeline.resyncs == 0  # clock jitter does not move the reference


def test_played_timeline_hands_the_reference_lead_ms_early():
    timeline = PlayedTimeline(lead_ms=40)
    audio = np.arange(40 * BLOCK, dtype=np.float32)
    for k in range(40):
        timeline.put(audio[k * BLOCK:(k + 1) * BLOCK], 1.0 + k * 0.02)
    for j in range(30):
        far, aligned = timeline.take(BLOCK, 1.0 + j * 0.02)
    lead = 40 * RATE_HZ // 1000
    np.testing.assert_array_equal(far, audio[29 * BLOCK + lead:30 * BLOCK + lead])
    assert aligned


def test_aec_removes_a_delayed_echo_and_keeps_the_user():
    aec = make_echo_control(EchoSettings(echo="aec"))
    rng = np.random.default_rng(0)
    far = np.concatenate([np.zeros(RATE_HZ // 2), tone(3000, 0.3, 300) * rng.uniform(
        0.5, 1, 72000), np.zeros(RATE_HZ)]).astype(np.float32)  # the assistant, then quiet
    echo = 0.5 * np.concatenate([np.zeros(720, np.float32), far[:-720]])  # 30 ms, -6 dB
    user = np.zeros_like(far)
    user[-RATE_HZ // 2:] = tone(500, 0.2, 800)  # the user speaks once the assistant is done
    meter = EchoMeter()
    out = []
    for i in range(0, len(far), BLOCK):
        sent = aec.process(echo[i:i + BLOCK] + user[i:i + BLOCK], far[i:i + BLOCK])
        if RATE_HZ <= i < RATE_HZ * 3:  # after a second to converge
            meter.add(echo[i:i + BLOCK], sent)
        out.append(sent)
    assert meter.summary()["echo_reduction_db"] > 20
    assert dbfs(np.concatenate(out)[-RATE_HZ // 4:]) > dbfs(user[-RATE_HZ // 4:]) - 3


def test_ducking_hides_echo_but_lets_a_louder_user_through():
    duck = Ducker(EchoSettings(echo="duck"))
    far = tone(20, 0.3)
    assert np.abs(duck.process(0.5 * far, far)).max() < 1e-3  # echo, 6 dB down: ducked
    loud_user = tone(20, 0.6, 900)
    np.testing.assert_array_equal(duck.process(loud_user, far), loud_user)
    quiet = np.zeros(BLOCK, np.float32)
    for _ in range(20):  # 400 ms of silence: the echo tail is over
        duck.process(quiet, quiet)
    np.testing.assert_array_equal(duck.process(0.5 * far, quiet), 0.5 * far)


def test_unknown_echo_mode_is_a_clear_error():
    from voxloop.errors import VoxloopError

    with pytest.raises(VoxloopError, match="unknown echo mode"):
        make_echo_control(EchoSettings(echo="loud"))


def test_views_render_a_conversation():
    import io

    from rich.console import Console

    from voxloop.client.conversation import Turn
    from voxloop.client.view import PlainView, RichView, ViewState

    state = ViewState("connected to ws://x", "assistant speaking", -23.0, "aec", 0, 1,
                      [Turn("what can you do", "I can do simple math", latency_ms=812.0,
                            truncated_ms=640)], ["[   1.00s] you: what can you do"])
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(RichView()._render(state))
    text = console.export_text()
    assert "assistant speaking" in text and "812 ms" in text and "cut at 640 ms" in text
    out = io.StringIO()
    PlainView(out).update(state)
    assert "you: what can you do" in out.getvalue()
    assert "state assistant speaking" in out.getvalue()


def test_the_prefix_padding_follows_the_turn_detection():
    """server_vad says its padding; semantic_vad has none to say and the server keeps its
    own: a padding set under server_vad does not outlive a switch."""
    c = Conversation(JitterBuffer(JitterSettings()))
    c.on_event({"type": "session.updated", "session": {"audio": {"input": {
        "turn_detection": {"type": "server_vad", "prefix_padding_ms": 500}}}}})
    assert c.prefix_ms == 500
    c.on_event({"type": "session.updated", "session": {"audio": {"input": {
        "turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}}})
    assert c.prefix_ms == SemanticVad.PREFIX_PADDING_MS == 300
