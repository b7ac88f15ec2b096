"""Streaming == offline: random chunkings give the same codes and (within 1e-4) audio."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.registry import (
    ENCODEC_24KHZ_CONFIG,
    load_encodec_24khz,
    random_codec,
    randomize_codebooks,
)

SMALL = CodecConfig(n_filters=8, dimension=32, num_codebooks=4, cardinality=64)


@pytest.fixture(scope="module")
def compact():
    torch.manual_seed(0)
    return random_codec(SMALL)


@pytest.fixture(scope="module")
def encodec_arch():
    """EnCodec 24 kHz's exact architecture (reflect padding, 2 LSTM layers), random weights."""
    torch.manual_seed(0)
    return randomize_codebooks(load_encodec_24khz(pretrained=False))


MAX_PIECES = 300  # per stream: 1-sample chunks of 12,000 samples took minutes


def _split(total: int, sizes: list[int]) -> list[tuple[int, int]]:
    """Spans of ``sizes`` taken in turn; after MAX_PIECES - 1 of them, the rest at once."""
    spans, start, i = [], 0, 0
    while start < total:
        size = sizes[i % len(sizes)] if i < MAX_PIECES - 1 else total - start
        spans.append((start, min(total, start + size)))
        start, i = start + size, i + 1
    return spans


def check_stream_equals_offline(codec, wav: torch.Tensor, sample_chunks: list[int],
                                frame_chunks: list[int]) -> None:
    codes = codec.encode(wav)
    audio = codec.decode(codes)
    encoder = codec.stream_encoder(wav.shape[0])
    pieces = [encoder.push(wav[..., a:b]) for a, b in _split(wav.shape[-1], sample_chunks)]
    streamed = torch.cat(pieces + [encoder.flush()], dim=-1)
    assert torch.equal(streamed, codes)
    decoder = codec.stream_decoder(wav.shape[0])
    out = torch.cat([decoder.push(codes[..., a:b])
                     for a, b in _split(codes.shape[-1], frame_chunks)] + [decoder.flush()], dim=-1)
    assert out.shape == audio.shape
    assert (out - audio).abs().max().item() <= 1e-4


chunks = st.lists(st.integers(min_value=1, max_value=2500), min_size=1, max_size=6)
frame_chunks = st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=4)


FIXTURES_OK = [HealthCheck.function_scoped_fixture]


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURES_OK)
@given(sample_chunks=chunks, code_chunks=frame_chunks,
       length=st.integers(min_value=1, max_value=12000), seed=st.integers(0, 2**16))
def test_compact_stream_equals_offline(compact, sample_chunks, code_chunks, length, seed):
    wav = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    check_stream_equals_offline(compact, wav, sample_chunks, code_chunks)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=FIXTURES_OK)
@given(sample_chunks=chunks, code_chunks=frame_chunks,
       length=st.integers(min_value=1, max_value=6000), seed=st.integers(0, 2**16))
# Found by hypothesis: fed a few samples at a time, a residual block's reflect-padded conv
# waits for padding + 1 samples while its shortcut does not; a step that brought neither
# branch anything new dropped the shortcut's waiting samples (11 samples: no frame at all;
# longer inputs: wrong codes).
@example(sample_chunks=[1], code_chunks=[1], length=11, seed=0)
@example(sample_chunks=[3], code_chunks=[2], length=700, seed=0)
def test_encodec_architecture_stream_equals_offline(encodec_arch, sample_chunks, code_chunks,
                                                     length, seed):
    wav = torch.randn(1, 1, length, generator=torch.Generator().manual_seed(seed)) * 0.3
    check_stream_equals_offline(encodec_arch, wav, sample_chunks, code_chunks)


@pytest.mark.parametrize(("name", "length", "sizes"), [
    ("encodec_arch", 11, [1]), ("encodec_arch", 400, [3]), ("compact", 1500, [1, 7, 640])])
def test_awkward_chunkings_stream_equals_offline(name, length, sizes, request):
    """The property tests' counterexamples and kin, quick enough for ``make check``."""
    wav = torch.randn(1, 1, length, generator=torch.Generator().manual_seed(0)) * 0.3
    check_stream_equals_offline(request.getfixturevalue(name), wav, sizes, [1, 2])


def test_batched_streams_are_independent(compact):
    wavs = [torch.randn(1, 1, 5000 + 700 * i, generator=torch.Generator().manual_seed(i)) * 0.3
            for i in range(3)]
    length = max(w.shape[-1] for w in wavs)
    batch = torch.cat([torch.nn.functional.pad(w, (0, length - w.shape[-1])) for w in wavs])
    encoder = compact.stream_encoder(3)
    codes = torch.cat([encoder.push(batch[..., i:i + 333]) for i in range(0, length, 333)]
                      + [encoder.flush()], dim=-1)
    for i, w in enumerate(wavs):
        alone = compact.encode(w)
        assert torch.equal(codes[i:i + 1, :, :alone.shape[-1]], alone)


def test_contract_attributes(compact, encodec_arch):
    assert compact.frame_rate == 25.0 and compact.sample_rate == 16000
    assert compact.num_codebooks == 4 and compact.cardinality == 64
    codes = compact.encode(torch.zeros(1, 1, 16000))
    assert codes.dtype == torch.int64 and codes.shape == (1, 4, 25)
    assert encodec_arch.frame_rate == 75.0 and encodec_arch.config == ENCODEC_24KHZ_CONFIG
    assert encodec_arch.bitrate_bps == 6000.0 and encodec_arch.bitrate_bps_of(2) == 1500.0


def test_fewer_codebooks_decode(compact):
    codes = compact.encode(torch.randn(1, 1, 3200) * 0.3)
    assert compact.decode(codes[:, :2]).shape == (1, 1, 3200)


@pytest.mark.parametrize("name", ["compact", "encodec_arch"])
def test_inference_path_matches_the_modules_forward(name, request):
    """encode/decode run the streaming code; it must agree with the modules' own forward
    (which training uses) and with encodec's quantizer."""
    from voxloop.codecs.streaming import streamify

    codec = request.getfixturevalue(name)
    gen = torch.Generator().manual_seed(3)
    wav = torch.randn(2, 1, 5 * codec.hop, generator=gen) * 0.3
    latent = torch.randn(2, codec.config.dimension, 5, generator=gen)
    with torch.inference_mode():
        for part, x in ((codec.encoder, wav), (codec.decoder, latent)):
            layers = streamify(part)
            state = layers.init_state(2)
            y = layers.step(state, x)
            tail = layers.flush(state)
            streamed = y if tail is None else torch.cat([y, tail], dim=-1)
            torch.testing.assert_close(streamed, part(x), atol=1e-4, rtol=1e-4)
        codes = codec.quantize(latent)
        vq = codec.quantizer.vq
        assert torch.equal(codes, vq.encode(latent, n_q=codec.num_codebooks).transpose(0, 1))
        torch.testing.assert_close(codec.dequantize(codes), vq.decode(codes.transpose(0, 1)))


def test_folded_weight_norm_gives_the_same_output(compact):
    import copy

    folded = copy.deepcopy(compact).fold_weight_norm()
    assert not any(hasattr(m, "weight_g") for m in folded.modules())
    wav = torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(4)) * 0.3
    codes = compact.encode(wav)
    assert torch.equal(folded.encode(wav), codes)
    torch.testing.assert_close(folded.decode(codes), compact.decode(codes), atol=1e-5, rtol=1e-5)
