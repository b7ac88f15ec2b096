"""Linear layers that read float16 weights and compute in float32, for inference on a CPU.

The bundled models ship float16 weights and run in float32. A streamed frame multiplies
one row (or a few) by each weight matrix, and such a product reads the whole matrix from
memory: its bytes, not its arithmetic, are the cost. FBGEMM's fp16 GEMM
(``torch.ops.quantized.linear_dynamic_fp16``) keeps the weights packed as float16 and
multiplies float32 activations without rounding them, so half the bytes are read.
Where the weights are float16 values already (every bundled model's are), the output is
``nn.Linear``'s up to the order of float32 sums (~1e-6); a layer whose weights are not
is left as it is, so packing never changes what a model computes beyond that.

    swapped = pack_float16_linears(decoder)   # in place; 0 where this torch has no FBGEMM

A packed layer has no parameters (its weights live in the packed object), no gradient and
no device but the CPU: pack only a model that will not be trained, moved or saved.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def fbgemm_fp16_available() -> bool:
    """Whether this torch can pack float16 weights for FBGEMM (x86 builds; not ARM)."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    try:
        torch.ops.quantized.linear_prepack_fp16(torch.zeros(1, 1), None)
    except (RuntimeError, AttributeError):
        return False
    return True


class Float16Linear(nn.Module):
    """An ``nn.Linear`` whose weight is packed as float16: ``x [..., in]`` -> ``[..., out]``
    in float32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach().float(),
                                                              bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float16"


# torch's own layers whose fast paths read their linear layers' ``weight`` directly
_READS_ITS_WEIGHTS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.MultiheadAttention)


def is_float16_exact(weight: Tensor) -> bool:
    """Whether every value of ``weight`` is a float16 value (packing it loses nothing)."""
    return weight.device.type == "cpu" and bool(torch.equal(weight.half().float(), weight))


def pack_float16_linears(module: nn.Module) -> int:
    """Replace, in place, every ``nn.Linear`` inside ``module`` whose weight is float16-exact
    (and on the CPU) by a :class:`Float16Linear`; returns how many were replaced (0 where
    FBGEMM is missing: the model then runs as it was)."""
    if not fbgemm_fp16_available():
        return 0
    swapped = 0
    for parent in list(module.modules()):
        if isinstance(parent, _READS_ITS_WEIGHTS):
            continue
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and is_float16_exact(child.weight.detach()):
                setattr(parent, name, Float16Linear(child))
                swapped += 1
    return swapped
