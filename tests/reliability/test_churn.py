"""Churn: 500 connect -> speak -> disconnect cycles against `voxloop serve`, 4 at a time,
on each engine.

Cycles by index: most speak part of a question and leave (a clean close or a cut TCP
connection); every tenth waits for the whole answer and checks it; others leave right
after the turn ends (the engine is transcribing) or in the middle of the answer audio
(the connection is cut). After a warm-up of 50 cycles the server's open sessions,
event-loop tasks, threads and RSS are taken; after the rest, open sessions must be
back to 0, tasks and threads no more than after the warm-up, and RSS within 10 %.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from tests.helpers.server import append_event, connect, silence
from tests.reliability.helpers import answered, metrics, rss_bytes, threads_of

pytestmark = pytest.mark.reliability_slow
CYCLES = int(os.environ.get("CHURN_CYCLES", "500"))
WARM_UP = 50
PARALLEL = 4


def kind_of(i: int) -> str:
    return {0: "full", 3: "leave_after_turn", 6: "cut_mid_answer"}.get(
        i % 10, "cut_mid_speech" if i % 2 else "close_mid_speech")


async def cycle(url: str, i: int, question: np.ndarray, engine_name: str) -> str:
    kind = kind_of(i)
    client = await connect(url)
    await client.until("session.created")
    if kind.endswith("mid_speech"):
        for chunk in np.array_split(question[: len(question) * 2 // 3], 10):
            await client.send(append_event(chunk))
    else:
        for chunk in np.array_split(np.concatenate([question, silence(1.0)]), 20):
            await client.send(append_event(chunk))
    if kind == "full":
        done = await client.until("response.done", timeout_s=120)
        transcript = done["response"]["output"][0]["content"][0]["transcript"]
        assert done["response"]["status"] == "completed" and answered(engine_name, transcript)
    elif kind == "leave_after_turn":
        await client.until("input_audio_buffer.speech_stopped", timeout_s=120)
    elif kind == "cut_mid_answer":
        await client.until("response.output_audio.delta", timeout_s=120)
    if kind.startswith("cut"):
        client.ws.transport.abort()  # no closing handshake: the TCP connection just ends
    else:
        await client.ws.close()
    return kind


async def run_cycles(url: str, indices: range, question: np.ndarray,
                     engine_name: str) -> dict[str, int]:
    gate = asyncio.Semaphore(PARALLEL)
    counts: dict[str, int] = {}

    async def one(i: int) -> None:
        async with gate:
            kind = await cycle(url, i, question, engine_name)
            counts[kind] = counts.get(kind, 0) + 1

    await asyncio.gather(*(one(i) for i in indices))
    return counts


def settle(server, timeout_s: float = 120) -> dict[str, float]:
    """Wait until no session is open and the loop's tasks stop falling; the server's state."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        m = metrics(server.http)
        now = (m["voxloop_sessions_open"], m["voxloop_event_loop_tasks"])
        if now[0] == 0 and now == last:
            break
        last = now
        time.sleep(1.0)
    time.sleep(2.0)  # engine work of cut sessions finishes its current step
    m = metrics(server.http)
    return {"sessions_open": m["voxloop_sessions_open"], "tasks": m["voxloop_event_loop_tasks"],
            "threads": threads_of(server.pid), "rss_mib": rss_bytes(server.pid) / 2**20,
            "sessions": m["voxloop_sessions_total"]}


def test_churn(serve_process, engine_name, question_24k):
    server = serve_process("--workers", str(PARALLEL))
    t0 = time.perf_counter()
    warm = asyncio.run(run_cycles(server.url, range(WARM_UP), question_24k, engine_name))
    before = settle(server)
    t1 = time.perf_counter()
    counts = asyncio.run(run_cycles(server.url, range(WARM_UP, CYCLES), question_24k,
                                    engine_name))
    after = settle(server)
    t2 = time.perf_counter()
    print(f"\nchurn ({engine_name}): {CYCLES} cycles ({WARM_UP} warm-up in {t1 - t0:.0f} s, "
          f"the rest in {t2 - t1:.0f} s); kinds after warm-up {counts} (warm-up {warm})")
    print(f"after warm-up {before}\nafter churn   {after}")
    assert after["sessions"] == CYCLES
    assert after["sessions_open"] == 0
    assert after["tasks"] <= before["tasks"]
    assert after["threads"] <= before["threads"]
    assert after["rss_mib"] <= 1.10 * before["rss_mib"]
    assert "Traceback" not in server.log(), server.log()[-3000:]
    assert server.terminate() == 0
