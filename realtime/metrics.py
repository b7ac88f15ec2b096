"""Prometheus metrics of one server, on a registry of its own (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def render(self) -> bytes:
        return generate_latest(self.registry)
