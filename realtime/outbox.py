"""Events waiting for the send task, in order. Urgent events overtake queued audio.

An urgent event (speech_started, errors) goes ahead of the answer audio queued since the
last other event, as in pipecat, so a barge-in is heard at once; it never overtakes
another event (the last turn's speech_stopped, committed, its item), so the client sees
the turns in order. When a response is cancelled its queued audio deltas are dropped, so
the client hears nothing more from it.

The queue is bounded, so a client that stops reading cannot grow the server's memory:
past ``max_stream_events`` queued, audio deltas are dropped (counted in ``dropped``; the
server tells the client); past ``max_events``, ``overflowed`` is set, later events are
discarded and the server closes the connection with a reason.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from voxloop.realtime.wire.events import OUTPUT_AUDIO_DELTA

AUDIO_DELTA_TYPES = frozenset({OUTPUT_AUDIO_DELTA})  # the events a backlog or a cancel drops


class Outbox:
    def __init__(self, max_stream_events: int, max_events: int,
                 on_drop: Callable[[], None] | None = None) -> None:
        self._queue: deque[dict] = deque()
        self._ready = asyncio.Event()
        self.max_stream_events, self.max_events = max_stream_events, max_events
        self.dropped = 0  # audio deltas discarded because the client was not reading
        self._on_drop = on_drop  # called for each of them (metrics)
        self.overflowed = asyncio.Event()  # set once more than max_events were waiting
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: dict) -> bool:
        """Queue ``event`` last; False if it was dropped for backlog."""
        if len(self._queue) >= self.max_stream_events and event["type"] in AUDIO_DELTA_TYPES:
            self.dropped += 1
            if self._on_drop:
                self._on_drop()
            return False
        return self._insert(len(self._queue), event)

    def put_urgent(self, event: dict) -> bool:
        """Queue ``event`` ahead of the audio deltas queued since the last other event."""
        at = len(self._queue)
        while at and self._queue[at - 1]["type"] in AUDIO_DELTA_TYPES:
            at -= 1
        return self._insert(at, event)

    def _insert(self, at: int, event: dict) -> bool:
        if self.overflowed.is_set():
            return False
        if len(self) >= self.max_events:
            self.overflowed.set()  # the server closes the connection
            return False
        self._queue.insert(at, event)
        self._ready.set()
        return True

    def drop_audio(self, response_id: str) -> int:
        """Remove the queued audio deltas of ``response_id``; return how many."""
        kept = deque(e for e in self._queue if not (
            e["type"] in AUDIO_DELTA_TYPES and e.get("response_id") == response_id))
        dropped = len(self._queue) - len(kept)
        self._queue = kept
        return dropped

    def close(self) -> None:
        """Wake the send task so it can finish what is queued and stop."""
        self.closed = True
        self._ready.set()

    async def get(self) -> dict | None:
        """The next event to send; None once closed and empty."""
        while True:
            if self._queue:
                return self._queue.popleft()
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
