"""``voxloop serve`` as a child process: started on a free port, stopped with SIGTERM.

For benchmarks and tests that want the server as a user runs it, in its own
process (its own GIL and threads), not in the caller's event loop.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

from voxloop.errors import VoxloopError

_LISTENING = re.compile(r"event=listening url=(\S+)")


class ServerProcess:
    """``with ServerProcess(["--engine", "native"]) as server: server.url``."""

    def __init__(self, args: list[str], start_timeout_s: float = 180.0) -> None:
        self.args, self.start_timeout_s = list(args), start_timeout_s
        self.log: list[str] = []
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxloop", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + self.start_timeout_s
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            if m := _LISTENING.search(line):
                self.url = m.group(1)
        if self.url is None:
            self.stop()
            raise VoxloopError("voxloop serve did not start:\n" + "".join(self.log[-20:]))
        threading.Thread(target=self._drain, daemon=True).start()  # keep the pipe flowing
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then wait; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode if self.proc else None
        return self.returncode

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line)
