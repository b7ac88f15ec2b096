"""Playback jitter buffer: answer audio from the websocket in, the sound card's blocks out.

The websocket task ``push``es decoded 24 kHz samples, tagged with the assistant item
they belong to; the audio callback ``pull``s exactly one block at a time. Playback
starts once ``prebuffer_ms`` are queued (or the item's audio is complete), so network
jitter does not become audible gaps. Running dry before the item's audio is complete
is an *underrun*: it is counted and playback waits for the prebuffer again.

``flush`` drops everything queued at once (barge-in) and says how much of the item
was really handed to the sound card, the number ``conversation.item.truncate`` needs.
Thread-safe: one lock, held only for list operations.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from voxloop.realtime.wire.protocol import WIRE_RATE_HZ


@dataclass(frozen=True)
class JitterSettings:
    prebuffer_ms: int = field(default=60, metadata={
        "help": "answer audio queued before playback starts (and after an underrun)"})


@dataclass
class ItemPlayback:
    """What became of one assistant item's audio."""

    received_samples: int = 0
    played_samples: int = 0
    first_play_s: float | None = None  # perf_counter when its first sample reached the speaker
    last_play_s: float | None = None  # ... and when its last one so far ends there (the span
    #                                   between is longer than what played by any stalls)
    complete: bool = False  # all its audio has been received


class JitterBuffer:
    def __init__(self, settings: JitterSettings = JitterSettings(),
                 rate_hz: int = WIRE_RATE_HZ) -> None:
        self.settings, self.rate_hz = settings, rate_hz
        self._prebuffer_samples = settings.prebuffer_ms * rate_hz // 1000
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, np.ndarray]] = deque()  # (item_id, samples [T])
        self._queued_samples = 0
        self._playing = False
        self._current: str | None = None  # the item last handed to the speaker
        self.items: dict[str, ItemPlayback] = {}
        self.underruns = 0

    def push(self, item_id: str, samples: np.ndarray) -> None:
        """Queue answer audio (float32 ``[T]``) of ``item_id``."""
        with self._lock:
            self._queue.append((item_id, samples.astype(np.float32, copy=False)))
            self._queued_samples += len(samples)
            self.items.setdefault(item_id, ItemPlayback()).received_samples += len(samples)

    def complete(self, item_id: str) -> None:
        """All of ``item_id``'s audio has arrived: play out the tail without waiting."""
        with self._lock:
            self.items.setdefault(item_id, ItemPlayback()).complete = True

    def pull(self, n_samples: int, play_time_s: float) -> np.ndarray:
        """The next ``n_samples`` for the speaker (zeros where there is nothing to play).

        ``play_time_s`` is when the block's first sample will be heard (perf_counter
        clock); it dates the first sample of each item."""
        out = np.zeros(n_samples, np.float32)
        with self._lock:
            if not self._playing:
                if not self._queue or not self._ready():
                    return out
                self._playing = True
            filled = 0
            while filled < n_samples and self._queue:
                item_id, samples = self._queue[0]
                self._current = item_id
                take = min(n_samples - filled, len(samples))
                out[filled:filled + take] = samples[:take]
                item = self.items[item_id]
                if item.first_play_s is None:
                    item.first_play_s = play_time_s + filled / self.rate_hz
                item.played_samples += take
                filled += take
                item.last_play_s = play_time_s + filled / self.rate_hz
                self._queued_samples -= take
                if take == len(samples):
                    self._queue.popleft()
                else:
                    self._queue[0] = (item_id, samples[take:])
            if filled < n_samples:  # ran dry
                self._playing = False
                if self._current is not None and not self.items[self._current].complete:
                    self.underruns += 1
        return out

    def flush(self) -> tuple[str | None, int]:
        """Drop all queued audio now; return ``(item_id, played_samples)`` of the item
        that was playing (``(None, 0)`` if none)."""
        with self._lock:
            current = self._queue[0][0] if self._queue else self._current
            self._queue.clear()
            self._queued_samples = 0
            self._playing = False
            self._current = None
            if current is None:
                return None, 0
            item = self.items[current]
            if item.complete and item.played_samples >= item.received_samples:
                return None, 0  # it had finished playing: nothing to cut
            return current, item.played_samples

    @property
    def audible(self) -> bool:
        """Whether answer audio is playing or about to."""
        with self._lock:
            return self._playing or self._queued_samples > 0

    @property
    def queued_ms(self) -> float:
        return 1000 * self._queued_samples / self.rate_hz

    def _ready(self) -> bool:
        if self._queued_samples >= self._prebuffer_samples:
            return True
        return self.items[self._queue[-1][0]].complete
