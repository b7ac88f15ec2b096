"""`voxloop client` live mode as a command: devices, startup time, reconnects, imports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.client import pulse
from tests.client.live_run import LiveRun
from tests.helpers.server import ServerThread

pytestmark = pulse.needs_pulseaudio


def voxloop_client(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxloop", "client", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_list_devices_shows_the_sound_server(pa):
    result = voxloop_client(pa.env, "--list-devices")
    assert result.returncode == 0, result.stderr
    assert "pulse" in result.stdout and "default input" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--input-device", "99"), "no input device 99: ids go from 0 to"),
    (("--output-device", "no-such-card"), "no output device matches 'no-such-card'"),
    (("--input-device", "ALSA"), "no input device matches 'ALSA'"),
])
def test_bad_device_is_a_clear_error(pa, args, message):
    result = voxloop_client(pa.env, "--url", "ws://127.0.0.1:9/v1/realtime", *args)
    assert result.returncode != 0
    assert message in result.stderr and "--list-devices" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_sound_server_is_a_clear_error(tmp_path):
    env = {**os.environ, "PULSE_SERVER": f"unix:{tmp_path}/nothing-here",
           "XDG_RUNTIME_DIR": str(tmp_path)}
    result = voxloop_client(env, "--url", "ws://127.0.0.1:9/v1/realtime")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no sound devices found" in result.stderr


def test_client_never_imports_torch_or_the_server():
    code = ("import sys, voxloop.client.cli, voxloop.client.live, voxloop.client.view, "
            "voxloop.client.devices, voxloop.client.audio_io, voxloop.client.echo; "
            "voxloop.client.echo.aec_available(); voxloop.client.devices.sounddevice(); "
            "import rich.live; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'torch' or "
            "m.startswith(('voxloop.distill', 'voxloop.codecs')) or "
            "(m.startswith('voxloop.realtime') and m != 'voxloop.realtime' "
            "and m.split('.')[:3] != ['voxloop', 'realtime', 'wire'])]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_reconnects_with_backoff_when_the_server_goes_away(pa, cascade_engine, tmp_path):
    port = _free_port()
    url = f"ws://127.0.0.1:{port}/v1/realtime"
    with LiveRun(url, pa.client_env(), tmp_path, "--echo", "off") as run:
        run.wait_for(r"reconnecting in 0\.5 s", 10)  # nothing there yet
        first = ServerThread(cascade_engine, port=port, drain_s=0.1)
        i, _ = run.wait_for(r"connected to ws://", 20)
        first.stop()
        i, gone_s = run.wait_for(r"reconnecting in", 20, after=i)
        second = ServerThread(cascade_engine, port=port, drain_s=0.1)
        _, back_s = run.wait_for(r"connected to ws://", 20, after=i)
        second.stop()
        stats = run.stop()
    print(f"\nreconnect: {1000 * (back_s - gone_s):.0f} ms from the server going away to "
          f"connected again ({stats['reconnects']} reconnects in all)")
    assert stats["reconnects"] >= 2
