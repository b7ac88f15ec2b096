"""`voxloop client` file mode against the real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from voxloop.audio import write_wav
from voxloop.client.files import speak_file, speech_end_sample
from voxloop.distill.teachers.domain.text import normalize
from voxloop.errors import VoxloopError

pytestmark = pytest.mark.slow


def test_file_turn_answers_and_measures_latency(server, judge, tmp_path):
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize("How many legs does a spider have?", "flite:slt")
    write_wav(tmp_path / "q.wav", samples, rate_hz)
    result = asyncio.run(speak_file(server.url, str(tmp_path / "q.wav")))
    assert result.status == "completed" and not result.errors
    assert "spider" in result.user_transcript.lower()
    assert "eight" in result.answer_transcript.lower()
    heard = normalize(judge.transcribe(result.answer, 24000)).split()
    assert "8" in heard  # Whisper writes "eight" or "8"
    # from the end of speech: at least the VAD's silence (300 ms), well under 30 s
    assert 250 < result.latency_ms < 30_000


def test_a_question_with_a_pause_waits_for_the_answer_to_what_came_after(make_server,
                                                                        tmp_path):
    """server_vad ends the turn in the pause and starts an answer; the speech after it
    cancels that answer (turn_detected): the client waits for the next one."""
    import numpy as np

    from voxloop.distill.teachers.tts import synthesize

    server = make_server(turn_detection="server_vad")
    hello, rate_hz = synthesize("Hello.", "flite:slt")
    spider, _ = synthesize("How many legs does a spider have?", "flite:slt")
    pause = np.zeros(rate_hz // 2, np.float32)  # 500 ms: past server_vad's 300
    write_wav(tmp_path / "q.wav", np.concatenate([hello, pause, spider]), rate_hz)
    result = asyncio.run(speak_file(server.url, str(tmp_path / "q.wav")))
    assert result.status == "completed"
    assert "eight" in result.answer_transcript.lower()


def test_unreachable_server_is_a_clear_error(tmp_path):
    import numpy as np

    write_wav(tmp_path / "q.wav", np.zeros(1600, np.float32), 16000)
    with pytest.raises(VoxloopError, match="Is `voxloop serve` running"):
        asyncio.run(speak_file("ws://127.0.0.1:9/v1/realtime", str(tmp_path / "q.wav")))


def test_speech_end_ignores_trailing_silence():
    import numpy as np

    x = np.concatenate([np.zeros(100), np.ones(500) * 0.5, np.zeros(1000)]).astype(np.float32)
    assert speech_end_sample(x) == 600


def test_client_never_imports_torch():
    code = ("import sys, voxloop.client.files, voxloop.client.cli; "
            "bad = [m for m in ('torch', 'voxloop.distill', 'voxloop.codecs') if m in sys.modules];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
