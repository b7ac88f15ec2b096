"""The input-audio object: its clock, trimming and committing to the sample, and the
one 16 kHz stream (equal to one resampling pass over everything appended)."""

from __future__ import annotations

import numpy as np

from voxloop.audio import MODEL_RATE_HZ, StreamingResampler, float_to_pcm16, pcm16_to_float
from voxloop.realtime.input_audio import InputAudio
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ


def signal_24k(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (0.3 * rng.standard_normal(int(seconds * WIRE_RATE_HZ))).astype(np.float32)


def fed(audio: InputAudio, samples_24k: np.ndarray) -> np.ndarray:
    """Append in odd-sized chunks (not whole milliseconds); return the 16 kHz output."""
    out, i = [], 0
    for n in np.random.default_rng(1).integers(1, 700, 10_000):
        out.append(audio.append(float_to_pcm16(samples_24k[i:i + n])))
        i += n
        if i >= len(samples_24k):
            return np.concatenate(out)
    raise AssertionError("signal too long for the chunk plan")


def test_clock_and_the_16k_stream():
    x = signal_24k(1.0)
    audio = InputAudio(max_buffer_s=60)
    samples_16k = fed(audio, x)
    assert audio.end_ms == 1000 and audio.buffered_ms == 1000
    one_pass = StreamingResampler(WIRE_RATE_HZ, MODEL_RATE_HZ).push(
        pcm16_to_float(float_to_pcm16(x)))
    assert np.array_equal(samples_16k, one_pass)


def test_trim_take_and_clear_to_the_sample():
    x = signal_24k(1.0)
    pcm = float_to_pcm16(x)
    audio = InputAudio(max_buffer_s=60)
    fed(audio, x)
    audio.trim_to(200)
    assert audio.buffered_ms == 800
    assert audio.take(700) == pcm[200 * 48:700 * 48]  # 48 bytes per ms
    assert audio.buffered_ms == 300
    audio.append(pcm[:10])  # 5 samples: less than a millisecond
    assert audio.take() == pcm[700 * 48:] + pcm[:10]  # all of it, to the sample
    assert audio.buffered_ms == 0 and audio.end_ms == 1000
    fed(audio, signal_24k(0.1))
    audio.clear()
    assert audio.buffered_ms == 0 and audio.end_ms == 1100


def test_what_the_engine_hears():
    x = signal_24k(1.0)
    audio = InputAudio(max_buffer_s=60)
    stream_16k = fed(audio, x)
    assert not audio.listening and len(audio.unheard_16k()) == 0
    audio.listen_from(250)
    first = audio.unheard_16k(up_to_ms=600)
    rest = audio.unheard_16k()
    assert np.array_equal(first, stream_16k[250 * 16:600 * 16])
    assert np.array_equal(rest, stream_16k[600 * 16:])
    assert len(audio.unheard_16k()) == 0  # heard once only
    audio.clear()
    assert not audio.listening


def test_the_buffer_bound():
    audio = InputAudio(max_buffer_s=0.5)
    assert audio.fits(24_000) and not audio.fits(24_002)  # 0.5 s of pcm16 at 24 kHz
    audio.append(bytes(20_000))
    assert audio.fits(4_000) and not audio.fits(4_002)
    assert not audio.over_limit
    audio.append(bytes(4_002))  # under turn detection an append is taken whole
    assert audio.over_limit
    audio.trim_to(audio.end_ms - 100)
    assert not audio.over_limit and audio.buffered_ms == 100
