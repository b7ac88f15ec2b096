"""The Codec contract the rest of voxloop relies on (see DESIGN.md)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor


class StreamEncoder(Protocol):
    def push(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, T]`` (any T) -> codes of the frames completed so far ``[B, K, F]``."""

    def flush(self) -> Tensor:
        """End of stream: zero-pad the last partial frame, return the codes still owed."""


class StreamDecoder(Protocol):
    def push(self, codes: Tensor) -> Tensor:
        """``codes [B, K, F]`` -> the audio they determine, ``[B, 1, F * hop]``."""

    def flush(self) -> Tensor:
        """End of stream: audio only the end determines (empty for zero-padded codecs)."""


class Codec(Protocol):
    sample_rate: int  # Hz
    frame_rate: float  # frames per second
    num_codebooks: int  # K
    cardinality: int  # codes per codebook

    def encode(self, wav: Tensor) -> Tensor:
        """``wav [B, 1, T]`` float in [-1, 1] -> ``codes [B, K, ceil(T / hop)]`` int64."""

    def decode(self, codes: Tensor) -> Tensor:
        """``codes [B, K, F]`` -> ``wav [B, 1, F * hop]``."""

    def stream_encoder(self, batch_size: int = 1) -> StreamEncoder: ...

    def stream_decoder(self, batch_size: int = 1) -> StreamDecoder: ...


def silence_codes(codec: Codec) -> np.ndarray:
    """``[K]`` the codes ``codec`` gives silence, half a second in: crop padding, a silent
    user turn. Past the first codebook they still wander a little frame to frame (the
    encoder's state settles slowly), so one fixed point is the definition."""
    with torch.no_grad():
        codes = codec.encode(torch.zeros(1, 1, codec.sample_rate))[0]  # [K, F]
    return codes[:, codes.shape[1] // 2].numpy()
