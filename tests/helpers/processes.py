"""Whether a process is still there, for tests that kill what started it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie nobody reaped has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def naming(text: str) -> list[int]:
    """Live processes whose command line holds ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_text() \
                    and running(int(proc.name)):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return found


def gone_within(pid: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for process ``pid`` to exit; whether it did."""
    return _within(timeout_s, lambda: not running(pid))


def none_named_within(text: str, timeout_s: float) -> list[int]:
    """Wait up to ``timeout_s`` for every process naming ``text`` to exit; those left."""
    _within(timeout_s, lambda: not naming(text))
    return naming(text)


def _within(timeout_s: float, done) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    return done()


def start_and_kill(code: str, *args: str) -> int:
    """Run ``python -c code args``, which starts a child and prints its pid; kill the
    starter with SIGKILL (no clean-up runs) once it has; the child's pid."""
    starter = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                               text=True)
    try:
        line = starter.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the starter printed no pid (exit code {starter.wait(30)})")
        return int(line)
    finally:
        starter.kill()
        starter.wait(30)
