"""Reconstruction losses for codec training: waveform L1 and multi-scale mel."""

from __future__ import annotations

import torch
import torchaudio
from torch import Tensor, nn


class MultiScaleMelLoss(nn.Module):
    """Sum over FFT sizes of L1 on log-mel plus L1 on mel magnitude."""

    def __init__(self, sample_rate_hz: int, fft_sizes: tuple[int, ...] = (256, 512, 1024, 2048),
                 n_mels: int = 64) -> None:
        super().__init__()
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate_hz, n_fft=n, hop_length=n // 4, win_length=n,
                n_mels=min(n_mels, n // 8), power=1.0, center=True, normalized=False)
            for n in fft_sizes
        )

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        """``[B, 1, T]`` each -> scalar loss."""
        loss = estimate.new_zeros(())
        for mel in self.mels:
            est, ref = mel(estimate), mel(target)
            loss = loss + (est - ref).abs().mean()
            loss = loss + (torch.log(est + 1e-5) - torch.log(ref + 1e-5)).abs().mean()
        return loss / len(self.mels)
