"""The moving average of weights the trainers keep with --ema."""

from __future__ import annotations

import torch

from voxloop.distill.student.averaged import AveragedWeights


def test_averaged_weights_are_held_only_inside_applied():
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    module[1].requires_grad_(False)  # frozen: not averaged, never touched
    averaged = AveragedWeights(module, decay=0.5)
    assert set(averaged.shadow) == {"0.weight", "0.bias"}
    own = {k: p.detach().clone() for k, p in module.named_parameters()}
    with torch.no_grad():
        for p in module.parameters():
            p.add_(2.0)
    averaged.update(module)  # halfway from the old weights to the new
    with averaged.applied(module):
        for k, p in module.named_parameters():
            torch.testing.assert_close(p, own[k] + (1.0 if k.startswith("0.") else 2.0))
    for k, p in module.named_parameters():
        torch.testing.assert_close(p, own[k] + 2.0)
    with AveragedWeights(module, decay=0.0).applied(module):  # off: the module's own
        assert all(torch.equal(p, own[k] + 2.0) for k, p in module.named_parameters())
