"""A moving average of a module's weights, which the student's and the mouth's trainers
judge, keep and export instead of the raw weights when asked (``--ema``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class AveragedWeights:
    """An exponential moving average of a module's parameters (``decay`` per ``update``;
    0: none, ``applied`` then leaves the module as it is). Frozen parameters are left out:
    set ``requires_grad`` before making it."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: p.detach().clone() for k, p in module.named_parameters()
                       if p.requires_grad} if decay else {}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for k, p in module.named_parameters():
            if k in self.shadow:
                self.shadow[k].lerp_(p.detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self, module: torch.nn.Module) -> Iterator[None]:
        """The module holds the averaged weights inside the block, its own after it."""
        own = {k: p.detach().clone() for k, p in module.named_parameters() if k in self.shadow}
        self.apply(module)
        try:
            yield
        finally:
            self.apply(module, own)

    @torch.no_grad()
    def apply(self, module: torch.nn.Module,
              weights: dict[str, torch.Tensor] | None = None) -> None:
        """Copy the averaged weights (or ``weights``) into the module, for good."""
        weights = self.shadow if weights is None else weights
        for k, p in module.named_parameters():
            if k in weights:
                p.copy_(weights[k])
