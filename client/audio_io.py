"""The sound card: microphone blocks in, jitter-buffered answer audio out.

Two PortAudio streams (so input and output may be different devices), 24 kHz mono
float32, one block of ``block_ms`` per callback. The callbacks only copy: the
input one hands ``MicBlock``s to ``on_mic`` (called on the audio thread; the live
loop forwards them to asyncio), the output one pulls from the :class:`JitterBuffer`
and keeps what it played in a :class:`ReferenceFifo`, the far-end signal the echo
canceller subtracts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voxloop.client.devices import resolve_device, sounddevice
from voxloop.client.jitter import JitterBuffer
from voxloop.realtime.protocol import AUDIO_RATE_HZ


@dataclass(frozen=True)
class AudioSettings:
    input_device: str | None = field(default=None, metadata={
        "help": "microphone: an id from --list-devices or a part of its name "
        "(default: the system's)"})
    output_device: str | None = field(default=None, metadata={
        "help": "speaker: an id from --list-devices or a part of its name"})
    block_ms: int = field(default=20, metadata={
        "help": "audio per sound-card block and per input_audio_buffer.append (20-40)"})


@dataclass
class MicBlock:
    samples: np.ndarray  # float32 [T], 24 kHz
    far: np.ndarray  # what the speaker played over the same time, [T]
    captured_s: float  # perf_counter when its first sample was captured


class ReferenceFifo:
    """What was played, sample for sample, waiting to be matched with the mic.

    The output callback appends every block (silence too), the input side takes
    the same number of samples; both run on the sound card's clock, so the fill
    level stays near the device latency. Capped at ``max_ms`` (oldest dropped)."""

    def __init__(self, max_ms: int = 1000) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self._samples, self._max = 0, max_ms * AUDIO_RATE_HZ // 1000
        self._lock = threading.Lock()

    def put(self, samples: np.ndarray) -> None:
        with self._lock:
            self._blocks.append(samples)
            self._samples += len(samples)
            while self._samples - len(self._blocks[0]) >= self._max:
                self._samples -= len(self._blocks.popleft())

    def take(self, n_samples: int) -> np.ndarray:
        out = np.zeros(n_samples, np.float32)
        filled = 0
        with self._lock:
            while filled < n_samples and self._blocks:
                block = self._blocks[0]
                k = min(n_samples - filled, len(block))
                out[filled:filled + k] = block[:k]
                filled += k
                self._samples -= k
                if k == len(block):
                    self._blocks.popleft()
                else:
                    self._blocks[0] = block[k:]
        return out


class AudioIO:
    """Open with ``start()``, close with ``close()``; ``on_mic`` gets each block."""

    def __init__(self, settings: AudioSettings, jitter: JitterBuffer,
                 on_mic: Callable[[MicBlock], None]) -> None:
        if not 10 <= settings.block_ms <= 100:
            raise ValueError("block_ms must be between 10 and 100")
        self.settings, self.jitter, self.on_mic = settings, jitter, on_mic
        self.block_samples = AUDIO_RATE_HZ * settings.block_ms // 1000
        self.input_index = resolve_device(settings.input_device, "input")
        self.output_index = resolve_device(settings.output_device, "output")
        self.reference = ReferenceFifo()
        self.status_flags: list[str] = []  # overflow/underflow reported by PortAudio
        self.latency_ms = (0.0, 0.0)  # (input, output) as PortAudio reports them
        self._streams: list = []

    def start(self) -> None:
        sd = sounddevice()
        common = dict(samplerate=AUDIO_RATE_HZ, channels=1, dtype="float32",
                      blocksize=self.block_samples, latency="low")
        self._streams = [
            sd.OutputStream(device=self.output_index, callback=self._play, **common),
            sd.InputStream(device=self.input_index, callback=self._record, **common),
        ]
        for stream in self._streams:
            stream.start()
        self.latency_ms = (1000 * self._streams[1].latency, 1000 * self._streams[0].latency)

    def close(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(Exception):  # a broken stream must not mask the cause
                stream.stop()
                stream.close()
        self._streams = []

    def _play(self, outdata, frames, time_info, status) -> None:
        if status:
            self.status_flags.append(str(status))
        ahead_s = _clock_offset(time_info.outputBufferDacTime, time_info.currentTime,
                                self._streams[0].latency if self._streams else 0.0)
        block = self.jitter.pull(frames, time.perf_counter() + ahead_s)
        outdata[:, 0] = block
        self.reference.put(block)

    def _record(self, indata, frames, time_info, status) -> None:
        if status:
            self.status_flags.append(str(status))
        ago_s = _clock_offset(time_info.currentTime, time_info.inputBufferAdcTime,
                              self._streams[1].latency if len(self._streams) > 1 else 0.0)
        samples = indata[:, 0].copy()
        self.on_mic(MicBlock(samples, self.reference.take(frames), time.perf_counter() - ago_s))


def _clock_offset(later: float, earlier: float, fallback_s: float) -> float:
    """``later - earlier`` from PortAudio's stream clock, or the stream's nominal
    latency where the host API gives no usable times."""
    delta = later - earlier
    return delta if 0.0 <= delta < 1.0 else fallback_s
