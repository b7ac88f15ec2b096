"""Run ``voxloop client`` (live mode, plain view) as a subprocess and follow its lines."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.client.pulse import audio_priority


def _in_background_with_audio_priority() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    audio_priority()  # the client plays the answer through the sound server


class LiveRun:
    """The client is started the way a script's ``cmd &`` starts it, with SIGINT ignored
    (as CI may start the tests): its Ctrl-C must still work, and ``stop`` checks that."""

    def __init__(self, url: str, env: dict, folder: Path, *args: str) -> None:
        self.stats_path = folder / f"stats-{time.monotonic_ns()}.json"
        self.started_s = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxloop", "client", "--url", url, "--view", "plain",
             "--stats-json", str(self.stats_path), *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            preexec_fn=_in_background_with_audio_priority)
        self.lines: list[tuple[float, str]] = []  # (perf_counter, line)
        self._new = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._new:
                self.lines.append((time.perf_counter(), line.rstrip("\n")))
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = 60.0, after: int = 0) -> tuple[int, float]:
        """Index and arrival time of the first line from ``after`` on that matches."""
        regex, deadline = re.compile(pattern), time.perf_counter() + timeout_s
        with self._new:
            while True:
                for i in range(after, len(self.lines)):
                    if regex.search(self.lines[i][1]):
                        return i, self.lines[i][0]
                left = deadline - time.perf_counter()
                if left <= 0 or self.proc.poll() is not None and not self._pending():
                    raise AssertionError(f"no line matching {pattern!r} in time; got:\n"
                                         + self.text())
                self._new.wait(min(left, 0.2))

    def _pending(self) -> bool:
        return not self.proc.stdout.closed and self.proc.poll() is None

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def __enter__(self) -> LiveRun:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:  # a failed test must not leave a client talking
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout_s: float = 15.0) -> dict:
        """Ctrl-C; returns the stats it wrote (and checks it exited cleanly)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout_s)
        time.sleep(0.1)
        assert rc == 0, f"client exited {rc}:\n{self.text()}"
        return json.loads(self.stats_path.read_text())
