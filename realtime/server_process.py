"""``voxloop serve`` as a child process: started on a free port, stopped with SIGTERM, and
stopped too when the process that started it exits without stopping it (killed).

For benchmarks and tests that want the server as a user runs it, in its own
process (its own GIL, threads, memory and exit code), not in the caller's event loop.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

from voxloop.errors import VoxloopError
from voxloop.realtime.server import STOP_WITH_PARENT_ENV

_LISTENING = re.compile(r"event=listening url=(\S+)")


class ServerProcess:
    """``with ServerProcess(["--engine", "native"]) as server: server.url``, or
    ``server = ServerProcess(args).start()`` and ``server.terminate()`` later."""

    def __init__(self, args: list[str], start_timeout_s: float = 180.0) -> None:
        self.args, self.start_timeout_s = list(args), start_timeout_s
        self.lines: list[str] = []  # everything it printed so far
        self.url: str | None = None  # ws://host:port/v1/realtime
        self.http: str | None = None  # http://host:port (for /healthz and /metrics)
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._ended_or_listening = threading.Event()
        self._eof = False  # its output ended (it exited)

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxloop", "serve", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", STOP_WITH_PARENT_ENV: str(os.getpid())})
        # one reader from the start keeps the pipe flowing and the log whole; the wait for
        # its "listening" line has a deadline of its own (a server that hangs silently)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._ended_or_listening.wait(self.start_timeout_s)
        if self.url is None:
            why = "it exited" if self._eof else \
                f"no listening line in {self.start_timeout_s:g} s"
            self.kill()
            raise VoxloopError(f"voxloop serve did not start ({why}):\n"
                               + "".join(self.lines[-20:]))
        self.http = self.url.replace("ws://", "http://").rsplit("/v1", 1)[0]
        return self

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.terminate()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return "".join(self.lines)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (if it still runs), then ``wait``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 30.0) -> int:
        """Its exit code, once it has exited (killed after ``timeout_s``), log complete."""
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        if self._reader is not None:
            self._reader.join(10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.url is None and (m := _LISTENING.search(line)):
                self.url = m.group(1)
                self._ended_or_listening.set()
        self._eof = True
        self._ended_or_listening.set()
