"""Prometheus metrics of one server, on a registry of its own (``GET /metrics``)."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_open = Gauge("voxloop_sessions_open", "open websocket sessions", registry=r)
        self.sessions = Counter("voxloop_sessions", "sessions accepted", registry=r)
        self.refused = Counter("voxloop_connections_refused", "connections refused",
                               ["reason"], registry=r)
        self.turns = Counter("voxloop_turns", "user turns committed", registry=r)
        self.responses = Counter("voxloop_responses", "responses by final status", ["status"],
                                 registry=r)
        self.barge_ins = Counter("voxloop_barge_ins", "responses interrupted by speech",
                                 registry=r)
        self.errors = Counter("voxloop_errors", "error events sent, by code", ["code"],
                              registry=r)
        self.first_audio = Histogram(
            "voxloop_first_audio_seconds", "end of the user's turn to the first answer audio "
            "queued for sending", buckets=LATENCY_BUCKETS_S, registry=r)
        self.dropped_audio = Counter("voxloop_dropped_audio_deltas", "audio deltas dropped for "
                                     "clients that stopped reading", registry=r)

        self.queued_events = Gauge("voxloop_queued_events", "events waiting to be sent, all "
                                   "sessions together", registry=r)
        self.tasks = Gauge("voxloop_event_loop_tasks", "asyncio tasks alive on the server's loop",
                           registry=r)
        self.tasks.set_function(_loop_tasks)
        self.threads = Gauge("voxloop_threads", "Python threads alive", registry=r)
        self.threads.set_function(threading.active_count)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, cpu seconds

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _loop_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the server's loop
        return float("nan")
