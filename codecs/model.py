"""NeuralCodec: encoder, residual vector quantizer and decoder, offline and streaming.

Assembled from parts passed in (as in encodec's ``EncodecModel``): a SEANet
encoder and decoder and encodec's ``ResidualVectorQuantizer``. Training runs
the modules' own forward; ``encode``/``decode`` run the streaming code on the
whole signal (one code path, as in moshi), zero-padding the input to a whole
number of frames, so the streaming encoder, fed the same samples in chunks and
flushed, returns exactly the same codes.
"""

from __future__ import annotations

import math
import warnings

import torch
from encodec.modules import SEANetDecoder, SEANetEncoder
from encodec.quantization import ResidualVectorQuantizer
from torch import Tensor, nn

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.frame_decoder import FrameDecoder, FrameStreamDecoder
from voxloop.codecs.streaming import streamify


def build_parts(config: CodecConfig) -> tuple[nn.Module, ResidualVectorQuantizer, nn.Module]:
    """Fresh causal SEANet encoder, RVQ and decoder for ``config``."""
    common = dict(channels=1, dimension=config.dimension, n_filters=config.n_filters,
                  ratios=list(config.ratios), norm="weight_norm", causal=True,
                  pad_mode=config.pad_mode, true_skip=config.true_skip,
                  lstm=config.lstm_layers)
    encoder = SEANetEncoder(**common)
    decoder = SEANetDecoder(**common)
    quantizer = ResidualVectorQuantizer(config.dimension, n_q=config.num_codebooks,
                                        bins=config.cardinality)
    return encoder, quantizer, decoder


class NeuralCodec(nn.Module):
    """Offline and streaming encode/decode around a SEANet encoder/decoder and an RVQ."""

    def __init__(self, encoder: nn.Module, quantizer: ResidualVectorQuantizer,
                 decoder: nn.Module, config: CodecConfig, name: str = "codec") -> None:
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.config = config
        self.name = name
        self.sample_rate = config.sample_rate_hz
        self.hop = config.hop_samples
        self.frame_rate = self.sample_rate / self.hop
        self.num_codebooks = config.num_codebooks
        self.cardinality = config.cardinality
        self.decoder_name = "seanet"
        self._frame_decoder = ()  # (FrameDecoder,) once use_decoder chose one: not a submodule

    @property
    def bitrate_bps(self) -> float:
        return self.bitrate_bps_of(self.num_codebooks)

    def bitrate_bps_of(self, codebooks: int) -> float:
        """Bits per second of the first ``codebooks`` codebooks' codes."""
        return self.frame_rate * codebooks * math.log2(self.cardinality)

    def pad_to_frames(self, wav: Tensor) -> Tensor:
        """Zero-pad ``[B, 1, T]`` on the right to a multiple of the hop."""
        extra = (-wav.shape[-1]) % self.hop
        return nn.functional.pad(wav, (0, extra)) if extra else wav

    def quantize(self, latent: Tensor) -> Tensor:
        """``[B, D, F]`` latent -> ``[B, K, F]`` int64 codes: per stage, the code nearest
        to the residual, as encodec's ``EuclideanCodebook.quantize``. Its distance
        ``-(|r|^2 - 2 r.e + |e|^2)`` has the same argmax as ``r.e - |e|^2 / 2``, which
        is one fused multiply-add (half the time of a streamed frame's search)."""
        residual = latent.transpose(1, 2).reshape(-1, latent.shape[1])  # [B * F, D]
        codes = []
        for embed, embed_t, half_norms in self._codebooks():
            index = torch.addmm(half_norms, residual, embed_t).argmax(dim=-1)
            residual = residual - embed.index_select(0, index)
            codes.append(index)
        codes = torch.stack(codes, dim=1).view(latent.shape[0], latent.shape[2], -1)
        return codes.transpose(1, 2).contiguous()

    def codebook_vectors(self, k: int | None = None) -> list[Tensor]:
        """The first ``k`` (default: all) codebooks, each ``[N, D]``: the quantizer's own
        tensors (training updates them in place; detach to keep a copy)."""
        layers = self.quantizer.vq.layers[:self.num_codebooks if k is None else k]
        return [layer._codebook.embed for layer in layers]

    def _codebooks(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per stage: codebook ``[N, D]``, its transpose ``[D, N]`` and minus half its
        squared norms ``[1, N]``; cached until a codebook changes (training updates
        them in place)."""
        embeds = self.codebook_vectors()
        key = tuple((e.data_ptr(), e._version) for e in embeds)
        if getattr(self, "_codebook_key", None) != key:
            with torch.no_grad():
                self._codebook_cache = [(e.detach(), e.detach().t().contiguous(),
                                         -0.5 * e.detach().pow(2).sum(1).unsqueeze(0))
                                        for e in embeds]
            self._codebook_key = key
        return self._codebook_cache

    def dequantize(self, codes: Tensor) -> Tensor:
        """``[B, K, F]`` codes (K may be fewer than num_codebooks) -> ``[B, D, F]``."""
        out = None
        for k, embed in enumerate(self.codebook_vectors(codes.shape[1])):
            part = nn.functional.embedding(codes[:, k], embed)  # [B, F, D]
            out = part if out is None else out + part
        if out is None:
            return codes.new_zeros(codes.shape[0], self.config.dimension, codes.shape[2],
                                   dtype=torch.float32)
        return out.transpose(1, 2)

    def fold_weight_norm(self) -> NeuralCodec:
        """Replace weight-normed (g, v) pairs by plain weights, once, for inference: the
        output is the same, each call cheaper. The state dict then has ``weight`` keys,
        so fold only a codec that will not be trained or saved."""
        for module in self.modules():
            if hasattr(module, "weight_g"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    nn.utils.remove_weight_norm(module)
        return self

    def forward(self, wav: Tensor, n_q: int | None = None) -> tuple[Tensor, Tensor]:
        """Training pass through the first ``n_q`` codebooks.

        ``wav [B, 1, T]``, T a multiple of the hop -> (reconstruction ``[B, 1, T]``,
        commitment loss). In training mode the codebooks follow their EMA updates. Under
        autocast the quantizer still runs in float32 (nearest-code search needs it).
        """
        latent = self.encoder(wav)
        with torch.autocast(latent.device.type, enabled=False):  # codebooks stay float32
            quantized, _, commit = self.quantizer.vq(latent.float(), n_q=n_q or self.num_codebooks)
        return self.decoder(quantized), commit.sum()

    @torch.inference_mode()
    def encode(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, T]`` -> ``codes [B, K, ceil(T / hop)]``."""
        stream = self.stream_encoder(wav.shape[0])
        return torch.cat([stream.push(wav), stream.flush()], dim=-1)

    @torch.inference_mode()
    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, K, F]`` -> ``wav [B, 1, F * hop]``."""
        stream = self.stream_decoder(codes.shape[0])
        return torch.cat([stream.push(codes), stream.flush()], dim=-1)

    def stream_encoder(self, batch_size: int = 1) -> StreamingEncoder:
        return StreamingEncoder(self, batch_size)

    def stream_decoder(self, batch_size: int = 1) -> StreamingDecoder | FrameStreamDecoder:
        if self._frame_decoder:
            return FrameStreamDecoder(self._frame_decoder[0], self.dequantize, batch_size)
        return StreamingDecoder(self, batch_size)

    def use_decoder(self, name: str, decoder: FrameDecoder | None) -> NeuralCodec:
        """Decode (``decode``, ``stream_decoder``) with a frame-rate decoder trained on this
        codec's frozen codes, or with the SEANet decoder again (``None``). The codes, the
        encoder and the codec's own weights and state dict stay as they are."""
        self.decoder_name = name
        self._frame_decoder = (decoder,) if decoder is not None else ()
        return self


class _Stream:
    """One streaming pass over ``part`` (the codec's encoder or decoder) for a batch."""

    def __init__(self, codec: NeuralCodec, part: nn.Module, batch_size: int) -> None:
        self.codec = codec
        self.layers = streamify(part)
        self.batch_size = batch_size
        self.state = self.layers.init_state(batch_size)


class StreamingEncoder(_Stream):
    """Push audio chunks of any length; get the codes of each completed frame."""

    def __init__(self, codec: NeuralCodec, batch_size: int = 1) -> None:
        super().__init__(codec, codec.encoder, batch_size)
        self.samples_in = 0

    @torch.inference_mode()
    def push(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, T]`` -> ``codes [B, K, F]`` for the frames this chunk completes."""
        self.samples_in += wav.shape[-1]
        latent = self.layers.step(self.state, wav)
        if latent.shape[-1] == 0:
            return torch.zeros(self.batch_size, self.codec.num_codebooks, 0, dtype=torch.long)
        return self.codec.quantize(latent)

    def flush(self) -> Tensor:
        """End of stream: zero-pad the last partial frame (as ``encode`` does) and
        return the codes that were still owed."""
        extra = (-self.samples_in) % self.codec.hop
        codes = self.push(torch.zeros(self.batch_size, 1, extra))
        with torch.inference_mode():
            tail = self.layers.flush(self.state)
        if tail is None or tail.shape[-1] == 0:
            return codes
        return torch.cat([codes, self.codec.quantize(tail)], dim=-1)


class StreamingDecoder(_Stream):
    """Push codes; get the audio they determine (``hop`` samples per frame) at once."""

    def __init__(self, codec: NeuralCodec, batch_size: int = 1) -> None:
        super().__init__(codec, codec.decoder, batch_size)

    @torch.inference_mode()
    def push(self, codes: Tensor) -> Tensor:
        """``codes [B, K, F]`` -> ``wav [B, 1, F * hop]``."""
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0)
        return self.layers.step(self.state, self.codec.dequantize(codes))

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """End of stream: audio that only the end determines (reflect-padded codecs only)."""
        tail = self.layers.flush(self.state)
        return tail if tail is not None else torch.zeros(self.batch_size, 1, 0)
