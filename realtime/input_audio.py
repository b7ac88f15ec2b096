"""A session's input audio: the uncommitted pcm16 buffer, its millisecond clock, and
the 16 kHz stream the VAD and the engine session hear.

Each append is converted to float and resampled (24 -> 16 kHz) once, by one
streaming resampler per session, so the VAD and the engine hear the same samples
and nothing converts the same audio twice. The 16 kHz samples are kept alongside
the pcm16 bytes, trimmed and committed with them, because a turn starts before
the VAD notices it (``prefix_padding_ms``) and the engine must hear that part too.

The clock is milliseconds of input audio since the session started: the clock of
OpenAI's ``audio_start_ms`` / ``audio_end_ms``. Positions are kept in samples, so
appends of any length never drift against it.

The bound (``max_buffer_s``): with turn detection off, an append that would pass it
is refused (only the client's commit or clear empties the buffer); with it on, the
session trims the audio that can no longer belong to a turn after every append
(:meth:`trim_to`), so the bound only limits one turn, and a turn that passes it
(:attr:`over_limit`) is cut.
"""

from __future__ import annotations

import numpy as np

from voxloop.audio import MODEL_RATE_HZ, StreamingResampler, pcm16_to_float
from voxloop.realtime.wire.protocol import BYTES_PER_SAMPLE, WIRE_RATE_HZ

SAMPLES_24K_PER_MS = WIRE_RATE_HZ // 1000
SAMPLES_16K_PER_MS = MODEL_RATE_HZ // 1000
_FLOAT_BYTES = 4


def joined_pcm16(first: bytes, first_end_ms: int, second: bytes, second_start_ms: int
                 ) -> bytes:
    """Two stretches of a session's 24 kHz pcm16, ``second`` after ``first``, as one:
    silence where the clock has a gap between them."""
    gap_samples = max(0, second_start_ms - first_end_ms) * SAMPLES_24K_PER_MS
    return first + bytes(gap_samples * BYTES_PER_SAMPLE) + second


class InputAudio:
    def __init__(self, max_buffer_s: float) -> None:
        self.max_buffer_s = max_buffer_s
        self._resampler = StreamingResampler(WIRE_RATE_HZ, MODEL_RATE_HZ)
        self._pcm16 = bytearray()  # uncommitted input at 24 kHz, from sample _start_24k on
        self._float_16k = bytearray()  # the same audio, float32 at 16 kHz, from _start_16k on
        self._start_24k = self._end_24k = 0  # sample indexes since the session started
        self._start_16k = self._end_16k = 0
        self._heard_16k: int | None = None  # the engine session has heard up to here (None:
        #                                     it is not listening)

    # -- the clock -------------------------------------------------------------------------
    @property
    def end_ms(self) -> int:
        """All input audio so far: the clock's now."""
        return self._end_24k * 1000 // WIRE_RATE_HZ

    @property
    def start_ms(self) -> int:
        """Where the uncommitted audio starts on the clock."""
        return self._start_24k * 1000 // WIRE_RATE_HZ

    @property
    def buffered_ms(self) -> int:
        """Uncommitted audio held."""
        return (self._end_24k - self._start_24k) * 1000 // WIRE_RATE_HZ

    # -- appending ---------------------------------------------------------------------------
    def fits(self, n_bytes: int) -> bool:
        """Whether ``n_bytes`` more pcm16 stay within ``max_buffer_s``: the one place the
        buffer's bound is decided."""
        cap_bytes = int(self.max_buffer_s * WIRE_RATE_HZ) * BYTES_PER_SAMPLE
        return len(self._pcm16) + n_bytes <= cap_bytes

    @property
    def over_limit(self) -> bool:
        """More than ``max_buffer_s`` is held (an append under turn detection is taken
        whole, and the session then decides what to drop)."""
        return not self.fits(0)

    def append(self, pcm16: bytes) -> np.ndarray:
        """Add 24 kHz pcm16; return the float32 16 kHz samples it completes ``[T16]``.
        Converts and resamples: for long chunks, call it off the event loop."""
        samples_16k = self._resampler.push(pcm16_to_float(pcm16))
        self._pcm16.extend(pcm16)
        self._end_24k += len(pcm16) // BYTES_PER_SAMPLE
        self._float_16k.extend(samples_16k.tobytes())
        self._end_16k += len(samples_16k)
        return samples_16k

    # -- taking audio out --------------------------------------------------------------------
    def trim_to(self, start_ms: int) -> None:
        """Forget the audio before ``start_ms`` (a turn started there, or no turn can start
        before it); a no-op for audio already gone."""
        self._cut(start_ms * SAMPLES_24K_PER_MS, start_ms * SAMPLES_16K_PER_MS)

    def take(self, end_ms: int | None = None) -> bytes:
        """Remove and return the pcm16 from the buffer's start to ``end_ms`` (default:
        all of it, to the sample); the buffer then starts there."""
        if end_ms is None:
            return self._cut(self._end_24k, self._end_16k)
        return self._cut(end_ms * SAMPLES_24K_PER_MS, end_ms * SAMPLES_16K_PER_MS)

    def clear(self) -> None:
        """Drop everything held; the engine stops hearing too."""
        self.take()
        self.stop_listening()

    def _cut(self, at_24k: int, at_16k: int) -> bytes:
        cut_24k = min(max(at_24k, self._start_24k), self._end_24k)
        cut_16k = min(max(at_16k, self._start_16k), self._end_16k)
        n_bytes = (cut_24k - self._start_24k) * BYTES_PER_SAMPLE
        out = bytes(self._pcm16[:n_bytes])
        del self._pcm16[:n_bytes]
        del self._float_16k[:(cut_16k - self._start_16k) * _FLOAT_BYTES]
        self._start_24k, self._start_16k = cut_24k, cut_16k
        return out

    # -- what the engine session hears -------------------------------------------------------
    @property
    def listening(self) -> bool:
        return self._heard_16k is not None

    def listen_from(self, start_ms: int) -> None:
        """The engine session hears this turn from ``start_ms`` on."""
        self._heard_16k = start_ms * SAMPLES_16K_PER_MS

    def stop_listening(self) -> None:
        self._heard_16k = None

    def unheard_16k(self, up_to_ms: int | None = None) -> np.ndarray:
        """The 16 kHz samples ``[T16]`` the engine session has not heard yet, up to
        ``up_to_ms`` (default: all appended), now counted as heard; empty when it is
        not listening."""
        if self._heard_16k is None:
            return np.zeros(0, np.float32)
        end = self._end_16k if up_to_ms is None else min(up_to_ms * SAMPLES_16K_PER_MS,
                                                         self._end_16k)
        start = max(self._heard_16k, self._start_16k)
        if end <= start:
            return np.zeros(0, np.float32)
        self._heard_16k = end
        offset = (start - self._start_16k) * _FLOAT_BYTES
        return np.frombuffer(self._float_16k, np.float32, end - start, offset).copy()
