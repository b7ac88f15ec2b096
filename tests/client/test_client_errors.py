"""`voxloop client`'s one-line errors: addresses, refused connections, output paths, a
turn nobody answers, and a reader that leaves early (`| head`). The server is the real
one on a scripted engine (tests/realtime/fakes.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.server import ServerThread, speech_24k
from tests.realtime.fakes import FakeEngine, Piece, Script
from voxloop.audio import read_wav, write_wav
from voxloop.client.connect import realtime_url

NOBODY = "ws://127.0.0.1:9/v1/realtime"  # the discard port: nothing listens there


def client(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxloop", "client", *args],
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voxloop client: error: "), out.stderr
    return lines[0]


@pytest.fixture()
def silent_wav(tmp_path):
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(16000, np.float32), 16000)
    return str(path)


@pytest.fixture()
def question_wav(tmp_path):
    path = tmp_path / "question.wav"
    write_wav(path, speech_24k("what time is it", "flite:slt"), 24000)
    return str(path)


@pytest.mark.parametrize(("url", "full"), [
    ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765/v1/realtime"),  # the SDK's base URL
    ("ws://127.0.0.1:8765/", "ws://127.0.0.1:8765/v1/realtime"),
    ("ws://127.0.0.1:8765/v1", "ws://127.0.0.1:8765/v1/realtime"),  # websocket_base_url
    ("ws://host:8765/v1/realtime", "ws://host:8765/v1/realtime"),
    ("wss://host/v1/realtime?model=voxloop", "wss://host/v1/realtime?model=voxloop"),
])
def test_the_sdk_url_forms_name_the_realtime_websocket(url, full):
    assert realtime_url(url) == full


@pytest.mark.parametrize(("url", "message"), [
    ("http://127.0.0.1:8765/v1/realtime", "use ws://127.0.0.1:8765/v1/realtime"),
    ("https://example.com", "use wss://example.com/v1/realtime"),
    ("ws://127.0.0.1:99999/v1/realtime", "the port must be a number from 1 to 65535"),
    ("127.0.0.1:8765", "expected ws://HOST:PORT"),
])
def test_a_bad_url_is_one_line(silent_wav, tmp_path, url, message):
    out = client("--url", url, "--input", silent_wav, "--output", str(tmp_path / "a.wav"))
    assert message in one_line_error(out)


@pytest.mark.parametrize(("output", "message"), [
    ("answer.mp3", "ending in .wav"),
    ("answer", "ending in .wav"),
    (".", "is a folder"),
])
def test_a_bad_output_path_is_refused_before_connecting(silent_wav, tmp_path, output, message):
    path = str(tmp_path / output)
    line = one_line_error(client("--url", NOBODY, "--input", silent_wav, "--output", path))
    assert message in line and "cannot connect" not in line


def test_output_without_input_is_refused_not_live_mode(tmp_path):
    line = one_line_error(client("--output", str(tmp_path / "a.wav"), timeout=60))
    assert "--output needs --input" in line


def test_nobody_listening_asks_whether_the_server_runs(silent_wav, tmp_path):
    line = one_line_error(client("--url", NOBODY, "--input", silent_wav, "--output",
                                 str(tmp_path / "a.wav")))
    assert "Is `voxloop serve` running" in line


@pytest.mark.parametrize(("settings", "message"), [
    ({"api_key": "s3cret"}, "HTTP 401 Unauthorized: missing or wrong API key"),
    ({"max_sessions": 0}, "HTTP 503 Service Unavailable: server full"),
])
def test_a_refusal_shows_the_status_and_the_servers_reason(silent_wav, tmp_path, settings,
                                                           message):
    server = ServerThread(FakeEngine(), **settings)
    try:
        base = server.url.rsplit("/v1/realtime", 1)[0]  # ws://127.0.0.1:PORT, as the SDK
        line = one_line_error(client("--url", base, "--input", silent_wav, "--output",
                                     str(tmp_path / "a.wav")))
    finally:
        server.stop()
    assert message in line and "Is `voxloop serve` running" not in line
    if "401" in message:
        assert "--api-key" in line


def unanswered_turn(engine: FakeEngine, wav: str, output) -> str:
    """The client's one-line error after it sends ``wav`` to a server on ``engine`` with a
    1 s tail and waits at most 2 s for the turn to end."""
    server = ServerThread(engine)
    try:
        return one_line_error(client("--url", server.url, "--input", wav, "--output",
                                     str(output), "--tail-s", "1", "--timeout-s", "2"))
    finally:
        server.stop()


def test_silence_ends_with_no_speech_heard(silent_wav, tmp_path):
    line = unanswered_turn(FakeEngine(), silent_wav, tmp_path / "a.wav")
    assert "no speech heard" in line and "--timeout-s" in line
    assert not (tmp_path / "a.wav").exists()


@pytest.mark.slow  # a TTS voice speaks the question
def test_an_engine_that_never_answers_ends_with_no_answer(question_wav, tmp_path):
    stuck = FakeEngine(Script(pieces=(Piece("too late", delay_s=120.0),)))
    line = unanswered_turn(stuck, question_wav, tmp_path / "a.wav")
    assert "no answer" in line and "heard speech" in line


@pytest.mark.slow  # a TTS voice speaks the question
def test_a_reader_that_leaves_early_still_gets_the_answer_saved(question_wav, tmp_path):
    """`voxloop client ... | head -2`: the pipe closes while the client prints; the answer
    wav is written first and the exit is quiet."""
    server = ServerThread(FakeEngine())
    answer = tmp_path / "a.wav"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "voxloop", "client", "--url", server.url,
                                 "--input", question_wav, "--output", str(answer)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.close()  # the reader is gone before the first line
        proc.wait(120)
        stderr = proc.stderr.read()
    finally:
        server.stop()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert proc.returncode == 141
    samples, rate_hz = read_wav(answer)
    assert rate_hz == 24000 and len(samples) > 0
