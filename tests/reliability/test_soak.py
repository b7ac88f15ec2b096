"""Soak: one live session, minutes of room tone, noise and speech bursts and questions at
random (seeded) times, faster than real time (tests/reliability/soak.py). Every question
is answered, the buffer holds no more than the prefix padding after every silence (under
semantic_vad: every silence longer than its longest wait), and
the process's memory stays flat. The ten-minute run is ``reliability_slow`` (make
test-reliability); a 90-second one, with a 10 s buffer, runs in ``make test``."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.helpers.server import speech_24k
from tests.reliability.helpers import answered
from tests.reliability.soak import IDLE_HELD_MS, Sounds, run_soak, soak_plan

MAX_ITEMS = 16  # items hold audio: a small cap makes the session's memory flat early
# RSS may grow while allocators warm up (answers of new lengths through Whisper, the TTS,
# the codec); measured on the cascade over ten minutes: +35 to +70 MiB, most of it in the
# first half. A session that kept its silence would add ~110 MiB per ten minutes.
RSS_GROWTH_MIB = 128  # after the first answer, to the end
RSS_SECOND_HALF_GROWTH_MIB = 40  # from the middle answer to the end
BURSTS = ("Okay.", "Hmm, let me think.", "Thank you very much.", "Yes.")
SEMANTIC_CAP_S = 4.5  # semantic_vad:medium's longest wait (4 s) and Silero's lag


@pytest.fixture(scope="module")
def sounds(question_24k) -> Sounds:
    return Sounds(question_24k, tuple(speech_24k(text) for text in BURSTS))


def _soak(make_server, engine_name, plan, turn_detection="server_vad", **settings):
    server = make_server(max_items=MAX_ITEMS, turn_detection=turn_detection, **settings)
    report = asyncio.run(run_soak(server, plan, lambda text: answered(engine_name, text)))
    print(f"\n[{engine_name}, {turn_detection}] {report.summary()}\n  events: {report.kinds}")
    assert report.questions == sum(s.kind == "question" for s in plan)
    # server_vad ends every turn within its 300 ms; semantic_vad may still be waiting on
    # a burst it finds unfinished, for up to medium's 4 s cap after the speech
    silences_s = [len(s.audio_24k) / 24000 for s in plan if s.kind == "silence"]
    longer_s = 0.0 if turn_detection == "server_vad" else SEMANTIC_CAP_S
    idle = [ms for ms, s in zip(report.idle_held_ms, silences_s, strict=True) if s > longer_s]
    assert idle and max(idle) <= IDLE_HELD_MS, report.idle_held_ms
    assert report.max_items <= MAX_ITEMS
    assert report.rss_end_bytes - report.rss_warm_bytes < RSS_GROWTH_MIB * 2**20
    middle_mib = report.rss_mib[len(report.rss_mib) // 2]
    assert report.rss_end_bytes / 2**20 - middle_mib < RSS_SECOND_HALF_GROWTH_MIB
    return report


@pytest.mark.slow
def test_soak_short(make_server, engine_name, sounds):
    """90 s of audio into a 10 s buffer: the first question comes after 15 s of silence."""
    plan = soak_plan(17, total_s=90, sounds=sounds, first_silence_s=15.0,
                     long_silence_s=(11.0, 20.0))
    report = _soak(make_server, engine_name, plan, max_buffer_s=10.0)
    assert report.max_held_ms <= 10_000
    assert report.audio_s > 2 * 10


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["native"])
def test_soak_short_under_semantic_vad(make_server, engine_name, sounds):
    """The same 90 s under the server's default turn detection (one engine: the end-of-turn
    model is the same for all three): every question answered, the buffer back to the
    prefix padding after every silence longer than medium's cap, memory flat."""
    plan = soak_plan(17, total_s=90, sounds=sounds, first_silence_s=15.0,
                     long_silence_s=(11.0, 20.0))
    report = _soak(make_server, engine_name, plan, "semantic_vad", max_buffer_s=10.0)
    assert report.max_held_ms <= 10_000


@pytest.mark.reliability_slow
def test_soak_ten_minutes(make_server, engine_name, sounds):
    """Ten minutes of audio with the default 60 s buffer; silences of up to 90 s."""
    plan = soak_plan(2024, total_s=600, sounds=sounds, first_silence_s=75.0,
                     long_silence_s=(20.0, 90.0))
    silences_s = [len(s.audio_24k) / 24000 for s in plan if s.kind == "silence"]
    assert max(silences_s) > 60 and sum(silences_s) > 400
    report = _soak(make_server, engine_name, plan)
    assert report.audio_s >= 600 and report.max_held_ms <= 60_000
    assert np.mean(report.idle_held_ms) <= IDLE_HELD_MS
