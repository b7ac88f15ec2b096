"""`voxloop serve`'s one-line errors for an address it cannot listen on, found before
any model loads (a missing student proves it: that error would come first otherwise)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

NO_MODEL = ("--engine", "native", "--native-student", "/no/such/student")


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxloop", "serve", *args],
                          capture_output=True, text=True, timeout=120)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("voxloop serve: error: "), out.stderr
    return lines[0]


@pytest.fixture()
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_port_in_use_is_found_before_the_models_load(busy_port):
    line = one_line_error(serve("--port", str(busy_port), *NO_MODEL))
    assert f"port {busy_port} on 127.0.0.1 is in use" in line and "--port" in line


@pytest.mark.parametrize(("args", "message"), [
    (("--port", "99999"), "--port 99999: a port is 0 to 65535"),
    (("--port", "-1"), "a port is 0 to 65535"),
    (("--host", "no.such.host.invalid"), "--host 'no.such.host.invalid' is not an address"),
    (("--host", "192.0.2.1"), "--host 192.0.2.1 is not an address of this machine"),  # TEST-NET
])
def test_a_bad_address_is_one_line(args, message):
    assert message in one_line_error(serve(*args, *NO_MODEL))


def test_verbose_works_after_the_subcommand():
    """`voxloop serve -v` used to be "unrecognized arguments: -v" (exit 2)."""
    line = one_line_error(serve("-v", "--port", "99999", *NO_MODEL))
    assert "a port is 0 to 65535" in line


@pytest.mark.parametrize("flag", ["--hybrid-min-words-logprob", "--hybrid-refusal-heard-logprob"])
def test_a_bad_hybrid_threshold_is_one_line_before_the_models_load(flag):
    line = one_line_error(serve("--engine", "hybrid", flag, "sure", "--port", "0"))
    assert f"{flag} 'sure': auto, none, or a log-probability" in line


@pytest.mark.parametrize(("args", "message"), [
    (("--workers", "0"), "--workers 0: must be above 0"),
    (("--idle-timeout-s", "0", "--max-message-kb", "-1"),
     "--max-message-kb -1, --idle-timeout-s 0.0: must be above 0"),
    (("--max-queued-audio", "3000"), "--max-queued-audio 3000 must be below"),
    (("--api-key", " "), "--api-key (or VOXLOOP_API_KEY) is empty"),
])
def test_limits_that_break_every_session_are_one_line_before_the_models_load(args, message):
    assert message in one_line_error(serve(*args, *NO_MODEL))


def test_a_key_subprotocol_on_its_own_header_line_is_read():
    """RFC 6455 lets a client send its subprotocols on several header lines."""
    from websockets.datastructures import Headers
    from websockets.http11 import Request

    from voxloop.realtime.auth import authorized

    headers = Headers()
    headers["Sec-WebSocket-Protocol"] = "realtime"
    headers["Sec-WebSocket-Protocol"] = "openai-insecure-api-key.s3cret"  # a second line
    assert authorized(Request("/v1/realtime", headers), "s3cret")
    assert not authorized(Request("/v1/realtime", headers), "other")
