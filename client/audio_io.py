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
from collections import deque
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
    aligned: bool = True  # False: ``far`` may not line up with the echo in ``samples``


class _ClockFollower:
    """A stream position in samples that advances by what passes and follows the
    PortAudio clock's reading of it only when the last few readings agree.

    The readings jitter by 10-20 ms block to block (more when callbacks run late on
    a busy machine) and one in a while is 50 ms off; moving the reference on each of
    them gave the echo canceller a new echo path every few hundred ms. A real step
    (an underrun's silence, dropped input) persists, so the median of the last
    ``votes`` readings sees it within a few blocks and a lone outlier never moves it.
    """

    def __init__(self, resync_samples: int, votes: int = 5) -> None:
        self.position: int | None = None
        self.jumps = 0
        self._resync = resync_samples
        self._errors: deque[int] = deque(maxlen=votes)

    def follow(self, reading: int) -> bool:
        """Compare the clock's reading of ``position`` with it (and move it if the
        clock has said so for long enough); True when this reading disagrees."""
        if self.position is None:
            self.position = reading
            return False
        error = reading - self.position
        self._errors.append(error)
        shift = int(np.median(self._errors))
        if len(self._errors) > self._errors.maxlen // 2 and abs(shift) > self._resync:
            self.position += shift
            self.jumps += 1
            self._errors = deque((e - shift for e in self._errors), maxlen=self._errors.maxlen)
        return abs(reading - self.position) > self._resync


class PlayedTimeline:
    """What the speaker played and when, so the mic can be matched with it.

    One time axis in samples (0 = when the first played block is heard). The output
    callback ``put``s every block (silence too) at the place its PortAudio clock says
    it is heard, so an underrun leaves the silence the speaker really played (a ring
    of samples in play order put the audio after the underrun too early and the
    echo path seemed to change at each one). ``take`` returns what was being heard
    while a mic block was captured. Both sides advance sample by sample and follow
    the clocks through :class:`_ClockFollower`, so jitter never shifts the reference.

    ``take`` also says whether the echo canceller can trust the reference: not while
    the clocks disagree, not for ``settle_ms`` after the reference moved (the
    canceller re-learns the echo path), not where the speaker side has not written
    yet (the output callback is late).
    """

    def __init__(self, keep_ms: int = 2000, resync_ms: int = 20, settle_ms: int = 500,
                 rate_hz: int = WIRE_RATE_HZ) -> None:
        self.rate_hz = rate_hz
        self._ring = np.zeros(keep_ms * rate_hz // 1000, np.float32)
        self._origin_s: float | None = None  # perf_counter time of sample 0
        self._end = 0  # the speaker side has written up to here
        self._trusted = 0  # and up to here while its clock agreed
        self._write = _ClockFollower(resync_ms * rate_hz // 1000)
        self._read = _ClockFollower(resync_ms * rate_hz // 1000)
        self._settle = settle_ms * rate_hz // 1000
        self._moved_at: int | None = None  # where the reference last moved
        self.unaligned_blocks = 0
        self._lock = threading.Lock()

    @property
    def resyncs(self) -> int:
        return self._read.jumps + self._write.jumps

    def _at(self, t_s: float) -> int:
        return round((t_s - self._origin_s) * self.rate_hz)

    def put(self, samples: np.ndarray, heard_s: float) -> None:
        with self._lock:
            if self._origin_s is None:
                self._origin_s = heard_s
            jumps = self._write.jumps
            disagrees = self._write.follow(self._at(heard_s))
            start = self._write.position
            if self._write.jumps != jumps:
                # the blocks put since the clock began to disagree went in at the old
                # place: move them along, and leave the silence the speaker played
                doubtful = self._load(self._trusted, self._end)
                self._clear(self._trusted, start - len(doubtful))
                self._store(start - len(doubtful), doubtful)
                self._moved_at = start - len(doubtful)
            self._store(start, samples)
            self._end = self._write.position = start + len(samples)
            if not disagrees:
                self._trusted = self._end

    def _store(self, start: int, samples: np.ndarray) -> None:
        i = start % len(self._ring)
        k = min(len(samples), len(self._ring) - i)
        self._ring[i:i + k] = samples[:k]
        self._ring[:len(samples) - k] = samples[k:]

    def _clear(self, first: int, last: int) -> None:
        first = max(first, last - len(self._ring))
        if last > first:
            self._store(first, np.zeros(last - first, np.float32))

    def _load(self, first: int, last: int) -> np.ndarray:
        return self._ring[np.arange(first, last) % len(self._ring)]

    def take(self, n_samples: int, captured_s: float) -> tuple[np.ndarray, bool]:
        """What the speaker played while the mic captured ``n_samples`` from
        ``captured_s`` on, and whether that can be trusted as the echo's reference."""
        out = np.zeros(n_samples, np.float32)
        with self._lock:
            if self._origin_s is None:
                return out, True  # nothing played yet: nothing to echo
            jumps = self._read.jumps
            disagrees = self._read.follow(self._at(captured_s))
            start = self._read.position
            if self._read.jumps != jumps:
                self._moved_at = start
            self._read.position = start + n_samples
            first = max(start, self._end - len(self._ring))
            last = min(start + n_samples, self._end)
            if last > first:
                out[first - start:last - start] = self._load(first, last)
            settled = self._moved_at is None or start >= self._moved_at + self._settle
            aligned = not disagrees and settled and start + n_samples <= self._trusted
            self.unaligned_blocks += not aligned
        return out, aligned


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
        far, aligned = self.reference.take(frames, captured_s)
        self.on_mic(MicBlock(indata[:, 0].copy(), far, captured_s, aligned))


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
