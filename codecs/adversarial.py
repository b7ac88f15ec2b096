"""Adversarial terms for codec training: encodec's multi-scale STFT discriminator,
hinge losses and relative feature matching (as in the EnCodec paper, sec. 3.4).

The discriminator is trained on ``real`` vs ``fake.detach()``; the generator
gets ``adversarial_weight * hinge(fake) + feature_weight * feature matching``.
The discriminator is not wrapped in DDP: under torchrun its gradients are
averaged explicitly before its optimizer step (``average_gradients``).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import Tensor, nn

DISCRIMINATOR_FILTERS = 32
FFT_SIZES = (512, 1024, 256)  # encodec's 24 kHz windows in ms, at 16 kHz; hop = window / 4


def new_discriminator() -> nn.Module:
    """encodec's ``MultiScaleSTFTDiscriminator``; ``forward(wav [B, 1, T])`` returns
    (logits per scale ``[B, 1, frames, bins]``, feature maps per scale and layer)."""
    from encodec.msstftd import MultiScaleSTFTDiscriminator

    with warnings.catch_warnings():  # encodec uses the older torch weight_norm API
        warnings.simplefilter("ignore", FutureWarning)
        return MultiScaleSTFTDiscriminator(
            filters=DISCRIMINATOR_FILTERS, n_ffts=list(FFT_SIZES),
            hop_lengths=[n // 4 for n in FFT_SIZES], win_lengths=list(FFT_SIZES))


def discriminator_hinge_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """Mean over scales of ``relu(1 - D(real)) + relu(1 + D(fake))``."""
    loss = sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean()
               for r, f in zip(real_logits, fake_logits, strict=True))
    return loss / len(real_logits)


def generator_hinge_loss(fake_logits: list[Tensor]) -> Tensor:
    """Mean over scales of ``relu(1 - D(fake))``."""
    return sum(torch.relu(1 - f).mean() for f in fake_logits) / len(fake_logits)


def feature_matching_loss(real_maps: list[list[Tensor]], fake_maps: list[list[Tensor]]) -> Tensor:
    """Mean over scales and layers of ``|real - fake|_1 / mean |real|`` (real detached)."""
    terms = [(r.detach() - f).abs().mean() / (r.detach().abs().mean() + 1e-8)
             for rs, fs in zip(real_maps, fake_maps, strict=True)
             for r, f in zip(rs, fs, strict=True)]
    return sum(terms) / len(terms)


def average_gradients(module: nn.Module) -> None:
    """All-reduce the gradients of ``module`` to their mean over the DDP ranks."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def adversarial_generator_losses(disc: nn.Module, recon: Tensor, wav: Tensor
                                 ) -> dict[str, Tensor]:
    """Generator side: ``adv`` (hinge) and ``feat`` (feature matching); no discriminator
    gradients. ``recon`` and ``wav`` are ``[B, 1, T]`` float32."""
    disc.requires_grad_(False)
    try:
        fake_logits, fake_maps = disc(recon)
        with torch.no_grad():
            _, real_maps = disc(wav)
    finally:
        disc.requires_grad_(True)
    return {"adv": generator_hinge_loss(fake_logits),
            "feat": feature_matching_loss(real_maps, fake_maps)}


def discriminator_step(disc: nn.Module, optimizer: torch.optim.Optimizer, recon: Tensor,
                       wav: Tensor, autocast) -> Tensor:
    """One hinge update of ``disc`` on real ``wav`` vs ``recon.detach()``; returns its loss.

    ``autocast`` is a context-manager factory (bf16 on GPU, or a no-op)."""
    with autocast():
        real_logits, _ = disc(wav)
        fake_logits, _ = disc(recon.detach())
    loss = discriminator_hinge_loss([r.float() for r in real_logits],
                                    [f.float() for f in fake_logits])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(disc)
    torch.nn.utils.clip_grad_norm_(disc.parameters(), 5.0)
    optimizer.step()
    return loss.detach()
