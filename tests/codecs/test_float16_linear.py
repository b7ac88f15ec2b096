"""Float16-packed linear layers: the model computes what it did, streamed as offline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from voxloop.codecs.float16_linear import Float16Linear, fbgemm_fp16_available, pack_float16_linears

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not fbgemm_fp16_available(),
                                 reason="this torch has no FBGEMM float16 linear")]


def test_packed_layer_is_the_linear_layer():
    torch.manual_seed(0)
    linear = nn.Linear(24, 40).half().float()
    packed = Float16Linear(linear)
    x = torch.randn(3, 5, 24)  # activations keep float32 precision: not rounded to float16
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), linear(x), atol=1e-6, rtol=1e-5)
        assert packed(x[:, :0]).shape == (3, 0, 40)
    assert not list(packed.parameters())


def test_only_float16_exact_weights_are_packed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8).half().float(), nn.ReLU(), nn.Linear(8, 8))
    assert pack_float16_linears(model) == 1  # the second's float32 weights would be rounded
    assert isinstance(model[0], Float16Linear) and type(model[2]) is nn.Linear


def test_torchs_transformer_layers_keep_their_linear_layers():
    """Their fast paths read ``linear1.weight``: packing them would break the layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)).half().float()
    assert pack_float16_linears(model.eval()) == 0
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 16)).shape == (2, 3, 16)
