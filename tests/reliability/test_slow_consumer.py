"""Clients that stop reading: the server's memory for them stays bounded, and others go on.

Two ways to stop reading, against the real server (on each engine) with small (test-sized)
queue caps:

- a listener whose socket buffer is tiny asks for answer after answer and never reads:
  its answers' audio is dropped once ``max_queued_audio`` events wait, and when it reads
  again it is told so (``output_audio_dropped``: on the cascade, which makes whole answers
  at once; the native engine's real-time pace never fills the queue); the queue never passes
  ``max_queued_events``, and another session's answer latency is printed without and
  with it (measured, not asserted: the machine is shared);
- a client that floods bad events without reading their errors: once
  ``max_queued_events`` wait, the server closes it with 1008 and a reason.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import pytest
import websockets

from tests.helpers.server import connect
from tests.reliability.helpers import (
    answered,
    metrics,
    question_event,
    tiny_socket,
    wait_for_metric,
)

pytestmark = pytest.mark.slow  # real servers on the engines

QUEUED_AUDIO = 20
QUEUED_EVENTS = 200
# an unknown event whose error echoes its 50 kB event_id: the socket buffers fill fast
BAD_EVENT = json.dumps({"type": "no.such.event", "event_id": "x" * 50_000})


async def asked_turn_ms(url: str, question: dict, engine_name: str) -> float:
    """response.create -> first answer audio, for a question sent as a whole item (ms);
    checks the answer."""
    client = await connect(url)
    await client.until("session.created")
    await client.send(question)
    await client.until("conversation.item.added")
    t0 = time.perf_counter()
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    latency_ms = 1000 * (time.perf_counter() - t0)
    done = await client.until("response.done")
    await client.ws.close()
    transcript = done["response"]["output"][0]["content"][0]["transcript"]
    assert done["response"]["status"] == "completed" and answered(engine_name, transcript)
    return latency_ms


async def latencies(url: str, question: dict, engine_name: str, n: int) -> list[float]:
    return [await asked_turn_ms(url, question, engine_name) for _ in range(n)]


@pytest.mark.reliability_slow
def test_listener_that_stops_reading(make_server, engine, question_24k):
    server = make_server(max_queued_audio=QUEUED_AUDIO, max_queued_events=QUEUED_EVENTS,
                         output_lead_ms=60_000)  # no pacing: answers pile up at once
    question = question_event(engine, question_24k)

    async def run():
        baseline = await latencies(server.url, question, engine.name, 3)
        slow = await websockets.connect(server.url, sock=tiny_socket(server.url), max_queue=1)
        queued, rss = [], []
        for _ in range(6):  # six answers asked for, none read
            await slow.send(json.dumps(question))
            await slow.send(json.dumps({"type": "response.create"}))
            await asyncio.sleep(1.5)
            m = metrics(server.http)
            queued.append(m["voxloop_queued_events"])
            rss.append(m["process_resident_memory_bytes"])
        during = await latencies(server.url, question, engine.name, 3)
        m = metrics(server.http)
        events, dropped_told = [], 0
        while True:  # read again: what was kept arrives, with word of what was dropped
            try:
                event = json.loads(await asyncio.wait_for(slow.recv(), 10))
            except TimeoutError:
                break
            events.append(event)
            if event["type"] == "error" and event["error"]["code"] == "output_audio_dropped":
                dropped_told += 1
        await slow.close()
        return baseline, during, queued, rss, m, events, dropped_told

    baseline, during, queued, rss, m, events, told = asyncio.run(run())
    print(f"\nother session, response.create -> first audio: without the stuck listener "
          f"{[round(x) for x in baseline]} ms (median {statistics.median(baseline):.0f}), "
          f"with it {[round(x) for x in during]} ms (median {statistics.median(during):.0f})")
    print(f"queued events while stuck {queued} (cap {QUEUED_EVENTS}); audio deltas dropped "
          f"{m['voxloop_dropped_audio_deltas_total']:.0f}; server RSS "
          f"{[round(r / 2**20) for r in rss]} MiB")
    assert max(queued) <= QUEUED_EVENTS
    if engine.name == "cascade":  # makes whole answers at once; the native engine decodes
        # at most 1 s ahead of real time, so 9 s of its answers fit in the kernel's socket
        # buffers and nothing has to be dropped
        assert told >= 1, [e["type"] for e in events][:50]
    done = [e for e in events if e["type"] == "response.done"]
    assert done and all(d["response"]["status"] in ("completed", "cancelled") for d in done)


# bad events only: no engine is ever asked anything, so one engine is enough
@pytest.mark.parametrize("engine_name", ["cascade"])
def test_flooding_client_that_never_reads_is_closed_with_a_reason(make_server):
    # no keepalive pings in the test's time: a flooding client does not answer them either,
    # and on a loaded machine the ping timeout (40 s by default) came before the backlog cap
    server = make_server(max_queued_events=QUEUED_EVENTS, close_timeout_s=30,
                         ping_interval_s=600.0)

    async def run():
        flood = await websockets.connect(server.url, sock=tiny_socket(server.url), max_queue=1)
        sent, peak = 0, 0.0
        t0 = time.perf_counter()
        cut = 'voxloop_errors_total{code="client_not_reading"}'
        try:  # bad events, whose errors it does not read, until the server gives up on it
            while sent < 500_000:
                await flood.send(BAD_EVENT)
                sent += 1
                if sent % 50 == 0:
                    m = metrics(server.http)
                    peak = max(peak, m["voxloop_queued_events"])
                    if m.get(cut):
                        break
        except websockets.ConnectionClosed:
            pass
        flood_s = time.perf_counter() - t0
        received = 0
        while True:  # reading again, it finds the errors that were sent, then the close
            try:
                await asyncio.wait_for(flood.recv(), 10)
                received += 1
            except (websockets.ConnectionClosed, TimeoutError):
                break
        await flood.close()
        return sent, flood_s, received, peak, flood.close_code, flood.close_reason, \
            metrics(server.http)

    sent, flood_s, received, peak, code, reason, m = asyncio.run(run())
    print(f"\nflood: {sent} bad events in {flood_s:.1f} s, not read; peak queued {peak:.0f} "
          f"(cap {QUEUED_EVENTS}); {received} errors read afterwards; close {code} {reason!r}")
    assert peak <= QUEUED_EVENTS
    assert code == 1008 and "not reading" in reason, (code, reason)
    assert m['voxloop_errors_total{code="client_not_reading"}'] == 1, m
    assert wait_for_metric(server.http, "voxloop_sessions_open", 0) == 0
