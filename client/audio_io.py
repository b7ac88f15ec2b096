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
from voxloop.client.echo import SILENT_DBFS, dbfs
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
    ahead_dbfs: float = SILENT_DBFS  # the level of what the speaker plays next (100 ms)


class _ClockFollower:
    """A stream position in samples that advances by the samples that pass and moves
    only where PortAudio reports the stream broke, by as much as its clock stepped.

    Between xruns a stream is sample-exact: the speaker plays, and the mic records,
    24000 samples a second. PortAudio's readings of it are not: on a busy machine
    they wandered by 5 ms/s for seconds (the input and output ones in opposite
    directions), one in a few hundred was 50 ms off, and PulseAudio's latency
    reports stepped by 25-40 ms and back with no gap in the sound at all, while the
    real echo delay stayed put. Following the readings moved the reference every few
    seconds and AEC3 lost the echo each time. So the readings only calibrate the
    start (the median of the first ``window``) and measure a reported xrun: the step
    is the median of the ``votes`` readings after it minus that of the ``votes``
    before. Readings whose median over ``window`` wanders past ``drift`` move it too:
    devices on two crystals do drift apart, and a break nobody reported shows there.
    """

    def __init__(self, rate_hz: int, drift_ms: int = 40, votes: int = 5,
                 window: int = 25) -> None:
        self.position: int | None = None
        self.jumps = 0
        self._drift, self._votes = drift_ms * rate_hz // 1000, votes
        self._offsets: deque[int] = deque(maxlen=window)  # reading - position, unbroken
        self._calibrated = False
        self._after: list[int] | None = None  # readings since an xrun, while measuring it
        self._before = 0  # where the readings were before it

    def follow(self, reading: int, xrun: bool = False) -> bool:
        """Compare the clock's reading of ``position`` with it and move it where the
        stream broke; True while that is being measured (the position is unsure)."""
        if self.position is None:
            self.position = reading
            return True
        offset = reading - self.position
        if not self._calibrated:
            self._offsets.append(offset)
            if len(self._offsets) == self._offsets.maxlen:
                self._calibrated = True
                self._move(self._baseline())
            return not self._calibrated
        if xrun or self._after is not None:
            return self._measure(offset, xrun)
        self._offsets.append(offset)
        if abs(self._baseline()) > self._drift:
            self._move(self._baseline(), jump=True)
        return False

    def _baseline(self) -> int:
        return int(np.median(self._offsets)) if self._offsets else 0

    def _measure(self, offset: int, xrun: bool) -> bool:
        if self._after is None:
            self._after = []
            self._before = int(np.median(list(self._offsets)[-self._votes:]))
        elif xrun:  # another one: its readings so far were not settled yet
            self._after.clear()
        self._after.append(offset)
        if len(self._after) < self._votes:
            return True
        step = int(np.median(self._after)) - self._before
        self.position += step  # the readings go on from where they were
        self.jumps += step != 0
        self._after = None
        return False

    def _move(self, step: int, jump: bool = False) -> None:
        """Move to where the readings' baseline is (it becomes 0)."""
        self.position += step
        self.jumps += jump
        self._offsets = deque((o - step for o in self._offsets), maxlen=self._offsets.maxlen)


class PlayedTimeline:
    """What the speaker played and when, so the mic can be matched with it.

    One time axis in samples (0 = when the first played block is heard). The output
    callback ``put``s every block (silence too) where it is heard, so an underrun
    leaves the silence the speaker really played (a ring of samples in play order
    put the audio after each underrun too early: a new echo path for the canceller
    every time). ``take`` returns what was being heard while a mic block was
    captured. Both sides count samples and go by PortAudio's clock only through a
    :class:`_ClockFollower`: its jitter and wander never move the reference.

    ``take`` hands the canceller the reference ``lead_ms`` early: AEC3 cancels only echo
    that comes after its reference, and the start calibration can be late by as much as
    the readings wandered (the echo came 6-16 ms before its reference in a clean-clone run
    on a loaded machine, and all of it reached the server). Leading by more than that
    costs a longer echo delay for AEC3 to find, and needs the speaker side written that
    much further ahead (a block it has not reached is distrusted, as below).

    ``take`` also says whether the echo canceller can trust the reference: not
    before the clocks are calibrated, not while an xrun is being measured, not until
    it has heard ``settle_ms`` of audible reference after the reference moved (it
    re-learns the echo path), not where the speaker side has not written yet (the
    output callback is late).
    """

    def __init__(self, keep_ms: int = 2000, settle_ms: int = 200, lead_ms: int = 40,
                 rate_hz: int = WIRE_RATE_HZ) -> None:
        self.rate_hz = rate_hz
        self.lead = lead_ms * rate_hz // 1000
        self._ring = np.zeros(keep_ms * rate_hz // 1000, np.float32)
        self._origin_s: float | None = None  # perf_counter time of sample 0
        self._end = 0  # the speaker side has written up to here
        self._trusted = 0  # and up to here in the right place (no xrun being measured)
        self._write = _ClockFollower(rate_hz)
        self._read = _ClockFollower(rate_hz)
        self._settle = settle_ms * rate_hz // 1000
        self._unsettled = 0  # audible reference the canceller has yet to hear since a move
        self.unaligned_blocks = 0
        self._lock = threading.Lock()

    @property
    def resyncs(self) -> int:
        return self._read.jumps + self._write.jumps

    def _at(self, t_s: float) -> int:
        return round((t_s - self._origin_s) * self.rate_hz)

    def put(self, samples: np.ndarray, heard_s: float, underrun: bool = False) -> None:
        with self._lock:
            if self._origin_s is None:
                self._origin_s = heard_s
            jumps = self._write.jumps
            unsure = self._write.follow(self._at(heard_s), underrun)
            start = self._write.position
            if self._write.jumps != jumps:
                # the blocks put while the xrun was measured went in at the old place:
                # move them along, and leave the silence the speaker played
                doubtful = self._load(self._trusted, self._end)
                self._clear(self._trusted, start - len(doubtful))
                self._store(start - len(doubtful), doubtful)
                self._unsettled = self._settle
            self._store(start, samples)
            self._end = self._write.position = start + len(samples)
            if not unsure:
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

    def take(self, n_samples: int, captured_s: float,
             overflow: bool = False) -> tuple[np.ndarray, bool]:
        """What the speaker played while the mic captured ``n_samples`` from
        ``captured_s`` on (``lead_ms`` ahead of it: see the class), and whether that can
        be trusted as the echo's reference (``overflow``: PortAudio lost input before
        this block)."""
        out = np.zeros(n_samples, np.float32)
        with self._lock:
            if self._origin_s is None:
                return out, True  # nothing played yet: nothing to echo
            jumps = self._read.jumps
            unsure = self._read.follow(self._at(captured_s), overflow)
            start = self._read.position
            if self._read.jumps != jumps:
                self._unsettled = self._settle
            self._read.position = start + n_samples
            start += self.lead
            first = max(start, self._end - len(self._ring))
            last = min(start + n_samples, self._end)
            if last > first:
                out[first - start:last - start] = self._load(first, last)
            aligned = not unsure and not self._unsettled and start + n_samples <= self._trusted
            if dbfs(out) > SILENT_DBFS + 10:
                # the canceller re-learns the echo path only while it hears the speaker:
                # a move during a silence is as new at the start of the next answer
                self._unsettled = max(0, self._unsettled - n_samples)
            self.unaligned_blocks += not aligned
        return out, aligned

    def ahead_dbfs(self, ahead_ms: int = 100) -> float:
        """The level of what the speaker plays in the ``ahead_ms`` after the last
        reference taken, and of the last ``ahead_ms`` it was given: where the reference
        is not trusted, the echo may be of either. The second needs no clock: when the
        speaker side stalls, or the reference lands past what it has written (a
        mis-measured xrun), the reference is silence while the speaker still plays the
        answer (on a loaded machine that silence lasted 400 ms and its echo barged in)."""
        n = ahead_ms * self.rate_hz // 1000
        with self._lock:
            first = self._read.position
            if first is None:
                return SILENT_DBFS
            first = max(first + self.lead, self._end - len(self._ring))
            last = min(first + n, self._end)
            ahead_db = dbfs(self._load(first, last)) if last > first else SILENT_DBFS
            return max(ahead_db, dbfs(self._load(self._end - n, self._end)))


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
        self.reference.put(block, heard_s, bool(status and status.output_underflow))

    def _record(self, indata, frames, time_info, status) -> None:
        if status:
            self.status_flags.append(str(status))
        ago_s = _clock_offset(time_info.currentTime, time_info.inputBufferAdcTime,
                              self._streams[1].latency if len(self._streams) > 1 else 0.0)
        captured_s = time.perf_counter() - ago_s
        far, aligned = self.reference.take(frames, captured_s,
                                           bool(status and status.input_overflow))
        self.on_mic(MicBlock(indata[:, 0].copy(), far, captured_s, aligned,
                             self.reference.ahead_dbfs()))


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
