"""The frame-rate decoder: streamed in chunks == offline, causal, saved and chosen by name."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.decoder_config import FrameDecoderConfig
from voxloop.codecs.float16_linear import Float16Linear, fbgemm_fp16_available, pack_float16_linears
from voxloop.codecs.frame_decoder import FrameDecoder
from voxloop.codecs.registry import random_codec
from voxloop.errors import VoxloopError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_fbgemm = pytest.mark.skipif(not fbgemm_fp16_available(),
                                  reason="this torch has no FBGEMM float16 linear")

SMALL = CodecConfig(n_filters=8, dimension=32, num_codebooks=4, cardinality=64)
TINY_DECODER = FrameDecoderConfig(latent_dim=32, num_codebooks=4, frame_width=48, frame_blocks=2,
                                  fine_width=32, fine_blocks=1, kernel=5, mlp_ratio=2)


def tiny_decoder(seed: int = 0) -> FrameDecoder:
    """Random weights large enough that every path matters (layer scales are not tiny)."""
    torch.manual_seed(seed)
    decoder = FrameDecoder(TINY_DECODER)
    with torch.no_grad():
        for p in decoder.parameters():
            p.normal_(0.0, 0.2)
    return decoder.eval()


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return random_codec(SMALL).use_decoder("tiny", tiny_decoder())


def _random_codes(frames: int, k: int, seed: int) -> torch.Tensor:
    return torch.randint(0, SMALL.cardinality, (2, k, frames),
                         generator=torch.Generator().manual_seed(seed))


def check_chunks_equal_offline(codec, codes: torch.Tensor, sizes: list[int]) -> None:
    offline = codec.decode(codes)
    assert offline.shape == (codes.shape[0], 1, codes.shape[-1] * codec.hop)
    stream, pieces, start, i = codec.stream_decoder(codes.shape[0]), [], 0, 0
    while start < codes.shape[-1]:
        size = sizes[i % len(sizes)]
        pieces.append(stream.push(codes[..., start:start + size]))
        start, i = start + size, i + 1
    streamed = torch.cat(pieces + [stream.flush()], dim=-1)
    assert streamed.shape == offline.shape
    assert (streamed - offline).abs().max().item() <= 1e-4


@pytest.mark.slow  # a property search (make check runs the one-frame case below)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5), frames=st.integers(1, 40),
       k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_chunked_decode_equals_offline(codec, sizes, frames, k, seed):
    check_chunks_equal_offline(codec, _random_codes(frames, k, seed), sizes)


def test_one_frame_at_a_time_equals_offline(codec):
    check_chunks_equal_offline(codec, _random_codes(17, 4, 1), [1])


def test_long_and_short_chunks_equal_offline(codec):
    """Chunks past SHORT_CHUNK frames take conv1d, shorter ones their windows: same audio."""
    from voxloop.codecs.frame_decoder import SHORT_CHUNK

    check_chunks_equal_offline(codec, _random_codes(2 * SHORT_CHUNK + 5, 4, 7),
                               [SHORT_CHUNK + 3, 1, 2])


def test_causal_no_look_ahead(codec):
    """Changing codes from frame 6 on leaves every sample before 6 hops unchanged."""
    codes = _random_codes(12, 4, 2)
    changed = codes.clone()
    changed[..., 6:] = _random_codes(6, 4, 3)
    a, b = codec.decode(codes), codec.decode(changed)
    cut = 6 * codec.hop
    assert torch.equal(a[..., :cut], b[..., :cut])
    assert not torch.equal(a[..., cut:], b[..., cut:])


def test_fewer_codebooks_condition_the_decoder(codec):
    codes = _random_codes(5, 4, 4)
    assert codec.decode(codes[:, :2]).shape == (2, 1, 5 * codec.hop)
    assert not torch.equal(codec.decode(codes[:, :2]), codec.decode(codes))


def test_masked_latent_is_the_codecs_dequantize(codec):
    from voxloop.codecs.decoder_train import masked_latent

    codes = _random_codes(6, 4, 5)
    books = torch.stack([e.detach() for e in codec.codebook_vectors()])
    for k in (1, 3, 4):
        torch.testing.assert_close(masked_latent(books, codes, torch.tensor([k, k])),
                                   codec.dequantize(codes[:, :k]))
    mixed = masked_latent(books, codes, torch.tensor([1, 4]))
    torch.testing.assert_close(mixed[1:], codec.dequantize(codes[1:]))


def test_decoders_ship_in_the_codec_folder(tmp_path):
    from voxloop.codecs.decoder_io import save_frame_decoder, shipped_decoders
    from voxloop.codecs.io import save_codec
    from voxloop.codecs.registry import load_codec

    torch.manual_seed(0)
    folder = save_codec(random_codec(SMALL), tmp_path / "codec")
    assert load_codec(str(folder), decoder="answers").decoder_name == "seanet"  # none shipped
    save_frame_decoder(tiny_decoder(), folder / "decoders" / "assistant")
    assert shipped_decoders(folder) == ["assistant"]
    chosen = load_codec(str(folder), decoder="answers")
    assert chosen.decoder_name == "assistant"
    assert load_codec(str(folder)).decoder_name == "seanet"  # auto: any voice, no general
    assert load_codec(str(folder), decoder="assistant").decoder_name == "assistant"
    codes = _random_codes(4, 4, 6)
    reference = tiny_decoder().half().float()  # the shipped weights are float16
    torch.testing.assert_close(chosen.decode(codes), reference(chosen.dequantize(codes), 4),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(VoxloopError, match="no decoder 'general'"):
        load_codec(str(folder), decoder="general")


def test_a_decoder_for_fewer_codebooks_or_another_rate_is_refused_at_load(tmp_path):
    from dataclasses import replace

    from voxloop.codecs.decoder_io import save_frame_decoder
    from voxloop.codecs.io import save_codec
    from voxloop.codecs.registry import load_codec

    folder = save_codec(random_codec(SMALL), tmp_path / "codec")
    for changes, says in (({"num_codebooks": 2}, "2 codebooks for 4"),
                          ({"sample_rate_hz": 24000}, "24000 vs 16000 Hz")):
        decoder = FrameDecoder(replace(TINY_DECODER, **changes)).eval()
        save_frame_decoder(decoder, tmp_path / "dec")
        with pytest.raises(VoxloopError, match=f"does not fit codec.*{says}"):
            load_codec(str(folder), decoder=str(tmp_path / "dec"))


@needs_fbgemm
def test_float16_packed_decoder_streams_as_offline_and_as_before():
    reference = tiny_decoder(3).half().float()  # what a shipped decoder loads
    packed = tiny_decoder(3).half().float()
    linears = sum(type(m) is nn.Linear for m in packed.modules())
    assert pack_float16_linears(packed) == linears > 0
    torch.manual_seed(0)
    codec = random_codec(SMALL).use_decoder("packed", packed)
    codes = _random_codes(21, 4, 11)
    with torch.inference_mode():
        torch.testing.assert_close(codec.decode(codes), reference(codec.dequantize(codes), 4),
                                   atol=1e-5, rtol=1e-5)
        for sizes in ([1], [3, 1, 5], [40]):
            check_chunks_equal_offline(codec, codes, sizes)


@needs_fbgemm
@pytest.mark.slow  # loads the bundled codec
def test_bundled_decoders_load_float16_packed():
    from voxloop.codecs.registry import load_codec

    for name in ("assistant", "general"):
        decoder = load_codec(decoder=name)._frame_decoder[0]
        assert not any(type(m) is nn.Linear for m in decoder.modules())
        assert any(isinstance(m, Float16Linear) for m in decoder.modules())
