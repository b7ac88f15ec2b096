"""The sound card: microphone blocks in, jitter-buffered answer audio out.

Two PortAudio streams (so input and output may be different devices), 24 kHz mono
float32, one block of ``block_ms`` per callback. The callbacks only copy: the
input one hands ``MicBlock``s to ``on_mic`` (called on the audio thread; the live
loop forwards them to asyncio), the output one pulls from the :class:`JitterBuffer`
and keeps what it played in a :class:`PlayedTimeline`, the far-end signal the echo
canceller subtracts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from voxloop.client.devices import resolve_device, sounddevice
from voxloop.client.jitter import JitterBuffer
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ


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


class PlayedTimeline:
    """What the speaker played and when, so the mic can be matched with it.

    The output callback ``put``s every block (silence too) with the time its first
    sample is heard; ``take`` returns the samples that were being heard while a mic
    block was captured. Both times come from PortAudio's stream clocks, so the echo
    canceller is left with only the acoustic delay. A read cursor advances block by
    block and is set again from the clocks only when they disagree by more than
    ``resync_ms`` (clock jitter must not shift the reference).
    """

    def __init__(self, keep_ms: int = 2000, resync_ms: int = 15) -> None:
        self._ring = np.zeros(keep_ms * WIRE_RATE_HZ // 1000, np.float32)
        self._written = 0  # samples played since the start
        self._anchor: tuple[int, float] | None = None  # (sample index, time it is heard)
        self._cursor: int | None = None
        self._resync = resync_ms * WIRE_RATE_HZ // 1000
        self.resyncs = 0
        self._lock = threading.Lock()

    def put(self, samples: np.ndarray, heard_s: float) -> None:
        with self._lock:
            i = self._written % len(self._ring)
            k = min(len(samples), len(self._ring) - i)
            self._ring[i:i + k] = samples[:k]
            self._ring[:len(samples) - k] = samples[k:]
            self._anchor = (self._written, heard_s)
            self._written += len(samples)

    def take(self, n_samples: int, captured_s: float) -> np.ndarray:
        out = np.zeros(n_samples, np.float32)
        with self._lock:
            if self._anchor is None:
                return out
            index, heard_s = self._anchor
            target = index + round((captured_s - heard_s) * WIRE_RATE_HZ)
            if self._cursor is None or abs(self._cursor - target) > self._resync:
                self.resyncs += self._cursor is not None
                self._cursor = target
            start, self._cursor = self._cursor, self._cursor + n_samples
            first = max(start, self._written - len(self._ring))
            last = min(start + n_samples, self._written)
            if last > first:
                idx = np.arange(first, last) % len(self._ring)
                out[first - start:last - start] = self._ring[idx]
        return out


class AudioIO:
    """Open with ``start()``, close with ``close()``; ``on_mic`` gets each block."""

    def __init__(self, settings: AudioSettings, jitter: JitterBuffer,
                 on_mic: Callable[[MicBlock], None]) -> None:
        if not 10 <= settings.block_ms <= 100:
            raise ValueError("block_ms must be between 10 and 100")
        self.settings, self.jitter, self.on_mic = settings, jitter, on_mic
        self.block_samples = WIRE_RATE_HZ * settings.block_ms // 1000
        self.input_index = resolve_device(settings.input_device, "input")
        self.output_index = resolve_device(settings.output_device, "output")
        self.reference = PlayedTimeline()
        self.status_flags: list[str] = []  # overflow/underflow reported by PortAudio
        self.latency_ms = (0.0, 0.0)  # (input, output) as PortAudio reports them
        self._streams: list = []

    def start(self) -> None:
        sd = sounddevice()
        common = dict(samplerate=WIRE_RATE_HZ, channels=1, dtype="float32",
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
        heard_s = time.perf_counter() + ahead_s
        block = self.jitter.pull(frames, heard_s)
        outdata[:, 0] = block
        self.reference.put(block, heard_s)

    def _record(self, indata, frames, time_info, status) -> None:
        if status:
            self.status_flags.append(str(status))
        ago_s = _clock_offset(time_info.currentTime, time_info.inputBufferAdcTime,
                              self._streams[1].latency if len(self._streams) > 1 else 0.0)
        captured_s = time.perf_counter() - ago_s
        far = self.reference.take(frames, captured_s)
        self.on_mic(MicBlock(indata[:, 0].copy(), far, captured_s))


_alsa_handler = None  # kept referenced: ALSA calls it for as long as the process lives


def quiet_alsa() -> None:
    """Stop ALSA printing to stderr (its "underrun occurred" would tear a live view)."""
    global _alsa_handler
    import ctypes

    if _alsa_handler is not None:
        return
    try:
        asound = ctypes.cdll.LoadLibrary("libasound.so.2")
    except OSError:  # not Linux, or no ALSA: nothing to quiet
        return
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                                    ctypes.c_int, ctypes.c_char_p)
    _alsa_handler = handler_type(lambda *args: None)
    asound.snd_lib_error_set_handler(_alsa_handler)


def _clock_offset(later: float, earlier: float, fallback_s: float) -> float:
    """``later - earlier`` from PortAudio's stream clock, or the stream's nominal
    latency where the host API gives no usable times."""
    delta = later - earlier
    return delta if 0.0 <= delta < 1.0 else fallback_s
