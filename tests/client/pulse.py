"""A private PulseAudio daemon for tests: null sinks "mic" and "speaker".

The daemon runs in its own runtime folder (so it never touches a desktop's sound
server) with anonymous auth. What is played into the ``mic`` sink is what a
client recording ``mic.monitor`` hears; what a client plays to ``speaker`` can be
recorded from ``speaker.monitor``. ``loopback`` feeds the speaker back into the
mic, as laptop speakers do.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from voxloop.audio import read_wav, resample

RATE_HZ = 24000
# A desktop's sound server and players run ahead of other work (rtkit, the compositor); on
# a busy CI machine (two test processes on two cores) a 40 ms device buffer at normal
# priority underflows, and Whisper hears the gaps.
AUDIO_NICE = -10


def audio_priority() -> None:
    """``preexec_fn`` for the audio processes: ``AUDIO_NICE`` where allowed (root or
    CAP_SYS_NICE), the default priority elsewhere."""
    with contextlib.suppress(OSError):
        os.nice(AUDIO_NICE)


class PulseAudio:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        runtime = folder / "runtime"
        runtime.mkdir(exist_ok=True)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(folder),
                    "PULSE_RUNTIME_PATH": str(runtime / "pulse"),
                    "PULSE_SERVER": f"unix:{runtime / 'pulse' / 'native'}"}
        for key in ("PULSE_SOURCE", "PULSE_SINK"):
            self.env.pop(key, None)
        script = folder / "default.pa"
        script.write_text(
            "load-module module-native-protocol-unix auth-anonymous=1\n"
            f"load-module module-null-sink sink_name=mic rate={RATE_HZ} channels=1\n"
            f"load-module module-null-sink sink_name=speaker rate={RATE_HZ} channels=1\n")
        subprocess.run(["pulseaudio", "-n", "-F", str(script), "--daemonize=yes",
                        "--exit-idle-time=-1", "--use-pid-file=yes",
                        f"--log-target=file:{folder / 'pulse.log'}"],
                       env=self.env, check=True, timeout=30, preexec_fn=audio_priority)
        deadline = time.monotonic() + 10
        while self.pactl("info", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not start: {self.log()}")
            time.sleep(0.1)

    def client_env(self) -> dict:
        """Environment for a client that records the mic and plays to the speaker
        through PortAudio's ALSA 'default' device (the pulse plugin)."""
        return {**self.env, "PULSE_SOURCE": "mic.monitor", "PULSE_SINK": "speaker"}

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, check=check, timeout=10,
                              capture_output=True, text=True)

    def play(self, wav: Path, sink: str = "mic") -> subprocess.Popen:
        return subprocess.Popen(["paplay", "-d", sink, str(wav)], env=self.env,
                                preexec_fn=audio_priority)

    def record(self, source: str, wav: Path) -> subprocess.Popen:
        return subprocess.Popen(["parec", "-d", source, f"--rate={RATE_HZ}", "--channels=1",
                                 "--format=s16le", "--file-format=wav", str(wav)],
                                env=self.env, preexec_fn=audio_priority)

    def loopback(self, gain_db: float, latency_ms: int = 30) -> str:
        """Feed the speaker into the mic ``gain_db`` quieter; returns the module id."""
        module = self.pactl("load-module", "module-loopback", "source=speaker.monitor",
                            "sink=mic", f"latency_msec={latency_ms}",
                            "source_dont_move=true", "sink_dont_move=true").stdout.strip()
        inputs = self.pactl("list", "sink-inputs").stdout.split("Sink Input #")[1:]
        ours = [block.split()[0] for block in inputs if f"Owner Module: {module}\n" in block]
        assert len(ours) == 1, f"loopback {module} has no single sink input: {inputs}"
        self.pactl("set-sink-input-volume", ours[0], f"{gain_db}dB")
        return module

    def unload(self, module: str) -> None:
        self.pactl("unload-module", module)

    def log(self) -> str:
        path = self.folder / "pulse.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def stop(self) -> None:
        pid_file = Path(self.env["PULSE_RUNTIME_PATH"]) / "pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


def available() -> bool:
    return all(shutil.which(p) for p in ("pulseaudio", "pactl", "paplay", "parec"))


needs_pulseaudio = pytest.mark.skipif(not available(), reason="needs pulseaudio, pactl, "
                                      "paplay and parec (scripts/bootstrap.sh installs them)")


def stop_recording(proc: subprocess.Popen, wav: Path) -> np.ndarray:
    """End a ``record`` and return what it heard, float32 ``[T]`` at 24 kHz."""
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    samples, rate_hz = read_wav(wav)
    return resample(samples, rate_hz, RATE_HZ)
