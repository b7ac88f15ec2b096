"""A frame-rate decoder for the frozen codec's codes (Vocos' family), causal and streaming.

::

    codes [B, K, F] --(the codec's frozen codebooks: the first K summed)--> latent [B, D, F]
      -> causal conv (kernel 3) to ``frame_width`` + an embedding of K
      -> ``frame_blocks`` causal ConvNeXt blocks at the frame rate (25 Hz)        [B, F, W]
      -> a linear layer to ``upsample`` STFT frames per codec frame (a transposed conv
         whose kernel is its stride: no overlap, so no state)                   [B, 4F, W']
      -> ``fine_blocks`` causal ConvNeXt blocks at the STFT rate (100 Hz)
      -> log-magnitude and phase of ``n_fft // 2 + 1`` bins -> irfft, Hann window,
         overlap-add at ``stft_hop_samples``                                    [B, 1, 640F]

Causality: every convolution sees only earlier frames (its left context is state).
STFT frame ``j``'s window covers samples ``[j * hop, j * hop + n_fft)``, so the
frames of codec frame ``c`` complete exactly samples ``[640 c, 640 (c + 1))``: no
look-ahead at all. The last ``n_fft - hop`` samples of the overlap-add wait for
later frames (``FrameDecoderState.tail``); at the end of a stream they lie past the
end and are dropped, as the SEANet decoder's transposed convolutions drop theirs.
The first ``n_fft - hop`` samples of a stream fade in (fewer windows overlap there).

One code path: ``forward(latent, k)`` is ``step`` on a fresh state, so a stream fed
codes in chunks of any size gives the offline audio (within float rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxloop.codecs.decoder_config import FrameDecoderConfig

MAX_MAGNITUDE = 100.0  # exp(log-magnitude) is clipped here, as in Vocos
INPUT_KERNEL = 3
SHORT_CHUNK = 32  # frames: up to here a causal conv is computed from its windows directly


@dataclass
class FrameDecoderState:
    """One stream's memory: per causal conv its last ``kernel - 1`` inputs
    ``[B, C, kernel - 1]``, and the overlap-add still owed ``[B, n_fft - hop]``."""

    contexts: list[Tensor]
    tail: Tensor


def causal_conv(conv: nn.Conv1d, context: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``x [B, C, T]`` after ``context [B, C, kernel - 1]`` -> (``[B, C', T]``, new context).

    A short chunk (a streamed frame or a few) is computed from its sliding windows directly,
    a fraction of ``conv1d``'s fixed cost at one frame; the same sums in another order."""
    buffer = torch.cat([context, x], dim=-1)
    if x.shape[-1] > SHORT_CHUNK:
        y = F.conv1d(buffer, conv.weight, conv.bias, groups=conv.groups)
    else:
        windows = buffer.unfold(-1, conv.kernel_size[0], 1)  # [B, C, T, kernel]
        if conv.groups == 1:  # one product of the flattened windows [B, T, C * kernel]
            flat = windows.transpose(1, 2).flatten(2)
            y = F.linear(flat, conv.weight.flatten(1), conv.bias).transpose(1, 2)
        else:  # depthwise
            y = (windows * conv.weight).sum(-1) + conv.bias[:, None]
    return y, buffer[..., buffer.shape[-1] - context.shape[-1]:]


class ConvNeXtBlock(nn.Module):
    """Causal depthwise conv, LayerNorm, GELU MLP, layer scale, residual; ``x [B, T, W]``."""

    def __init__(self, width: int, hidden: int, kernel: int, scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(width, width, kernel, groups=width)
        self.norm = nn.LayerNorm(width)
        self.pw1, self.pw2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.gamma = nn.Parameter(torch.full((width,), scale))

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        h, context = causal_conv(self.dwconv, context, x.transpose(1, 2))
        h = self.pw2(F.gelu(self.pw1(self.norm(h.transpose(1, 2)))))
        return x + self.gamma * h, context


class ISTFTHead(nn.Module):
    """``[B, J, W']`` -> log-magnitude and phase -> windowed irfft frames ``[B, J, n_fft]``."""

    def __init__(self, width: int, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.out = nn.Linear(width, 2 * (n_fft // 2 + 1))
        window = torch.hann_window(n_fft)
        overlap = window.square().view(-1, hop).sum(0)  # [hop]: constant for hop = n_fft / 4
        self.register_buffer("window", window / overlap.mean(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        log_magnitude, phase = self.out(x).chunk(2, dim=-1)
        magnitude = log_magnitude.exp().clamp(max=MAX_MAGNITUDE)
        spectrum = torch.complex(magnitude * phase.cos(), magnitude * phase.sin())
        return torch.fft.irfft(spectrum, n=self.n_fft) * self.window

    def overlap_add(self, frames: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        """``frames [B, J, n_fft]`` after ``tail [B, n_fft - hop]`` -> (the ``J * hop``
        samples they complete ``[B, J * hop]``, the new tail)."""
        count = frames.shape[1]
        length = (count - 1) * self.hop + self.n_fft
        summed = F.fold(frames.transpose(1, 2), output_size=(1, length),
                        kernel_size=(1, self.n_fft), stride=(1, self.hop)).view(-1, length)
        owed = tail.shape[-1]
        summed = torch.cat([summed[:, :owed] + tail, summed[:, owed:]], dim=-1)
        return summed[:, :count * self.hop], summed[:, count * self.hop:]


class FrameDecoder(nn.Module):
    """``latent [B, D, F]`` (the codec's dequantized codes) and ``k`` (codebooks used, an
    int or ``[B]``) -> ``wav [B, 1, F * hop]``; ``step`` streams it."""

    def __init__(self, config: FrameDecoderConfig) -> None:
        super().__init__()
        if config.n_fft % config.stft_hop_samples:
            raise ValueError("n_fft must be a multiple of the STFT hop")
        self.config = config
        width, fine = config.frame_width, config.fine_width
        self.input = nn.Conv1d(config.latent_dim, width, INPUT_KERNEL)
        self.k_embed = nn.Embedding(config.num_codebooks + 1, width)
        self.input_norm = nn.LayerNorm(width)
        scale = 1.0 / (config.frame_blocks + config.fine_blocks)
        self.frame_blocks = nn.ModuleList(
            ConvNeXtBlock(width, config.mlp_ratio * width, config.kernel, scale)
            for _ in range(config.frame_blocks))
        self.frame_norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, config.upsample * fine)
        self.fine_blocks = nn.ModuleList(
            ConvNeXtBlock(fine, config.mlp_ratio * fine, config.kernel, scale)
            for _ in range(config.fine_blocks))
        self.fine_norm = nn.LayerNorm(fine)
        self.head = ISTFTHead(fine, config.n_fft, config.stft_hop_samples)

    @property
    def hop_samples(self) -> int:
        return self.config.hop_samples

    def init_state(self, batch_size: int) -> FrameDecoderState:
        c = self.config
        widths = [(c.latent_dim, INPUT_KERNEL)] + [(c.frame_width, c.kernel)] * c.frame_blocks \
            + [(c.fine_width, c.kernel)] * c.fine_blocks
        device = self.input.weight.device
        contexts = [torch.zeros(batch_size, w, k - 1, device=device) for w, k in widths]
        return FrameDecoderState(contexts, torch.zeros(batch_size, c.n_fft - c.stft_hop_samples,
                                                       device=device))

    def step(self, state: FrameDecoderState, latent: Tensor, k: int | Tensor) -> Tensor:
        """``latent [B, D, F]`` (any F >= 0) -> ``wav [B, 1, F * hop]``; updates ``state``."""
        batch, frames = latent.shape[0], latent.shape[-1]
        if frames == 0:
            return latent.new_zeros(batch, 1, 0)
        contexts = iter(range(len(state.contexts)))
        i = next(contexts)
        x, state.contexts[i] = causal_conv(self.input, state.contexts[i], latent)
        k = torch.as_tensor(k, device=latent.device).expand(batch)
        x = self.input_norm(x.transpose(1, 2) + self.k_embed(k)[:, None])  # [B, F, W]
        for block in self.frame_blocks:
            i = next(contexts)
            x, state.contexts[i] = block(x, state.contexts[i])
        x = self.up(self.frame_norm(x)).view(batch, frames * self.config.upsample, -1)
        for block in self.fine_blocks:
            i = next(contexts)
            x, state.contexts[i] = block(x, state.contexts[i])
        wav, state.tail = self.head.overlap_add(self.head(self.fine_norm(x)), state.tail)
        return wav[:, None]

    def forward(self, latent: Tensor, k: int | Tensor) -> Tensor:
        """Offline (and training): ``step`` on a fresh state."""
        return self.step(self.init_state(latent.shape[0]), latent, k)


class FrameStreamDecoder:
    """The codec's ``StreamDecoder`` contract over a frame decoder: push codes, get the
    ``hop`` samples per frame they determine at once."""

    def __init__(self, decoder: FrameDecoder, dequantize, batch_size: int = 1) -> None:
        self.decoder, self.dequantize = decoder, dequantize
        self.batch_size = batch_size
        self.state = decoder.init_state(batch_size)

    @torch.inference_mode()
    def push(self, codes: Tensor) -> Tensor:
        """``codes [B, K, F]`` -> ``wav [B, 1, F * hop]``."""
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0)
        return self.decoder.step(self.state, self.dequantize(codes), codes.shape[1])

    def flush(self) -> Tensor:
        """End of stream: nothing is owed (the overlap-add tail lies past the end)."""
        return torch.zeros(self.batch_size, 1, 0)
