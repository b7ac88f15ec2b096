"""The semantic tokenizer's quantizers: k-means seeding, the cosine codebook's dead-code
restarts, codebook vectors equal to what the head sees, and configs saved before the
cosine quantizer still meaning encodec's EMA codebook."""

from __future__ import annotations

import pytest
import torch

from voxloop.codecs.semantic import SemanticBottleneck, SemanticConfig
from voxloop.codecs.semantic_vq import CosineCodebook, kmeans


def clusters(num: int, per: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` tight, well separated clusters of ``per`` points: (points, centers)."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.nn.functional.normalize(torch.randn(num, dim, generator=gen), dim=-1) * 5
    points = centers.repeat_interleave(per, 0) + 0.01 * torch.randn(num * per, dim, generator=gen)
    return points, centers


@pytest.mark.parametrize("cosine", [False, True])
def test_kmeans_finds_separated_clusters(cosine):
    points, centers = clusters(6, 40, 8)
    if cosine:
        points = torch.nn.functional.normalize(points, dim=-1)
        centers = torch.nn.functional.normalize(centers, dim=-1)
    means, counts = kmeans(points, 6, iters=20, cosine=cosine,
                           generator=torch.Generator().manual_seed(3))
    assert counts.sum() == 240
    found = torch.cdist(centers, means).min(1).values < 0.1
    assert found.sum() >= 4, found  # Lloyd's from random starts may merge a pair or two


def test_dead_codes_restart_at_frames():
    torch.manual_seed(0)
    book = CosineCodebook(dim=8, codebook_size=16, lookup_dim=4, commitment_weight=0.25,
                          dead_code_threshold=0.6, decay=0.5).train()
    with torch.no_grad():
        book.embed.copy_(torch.tensor([[1.0, 0, 0, 0]]).expand(16, -1))  # one code for all
    frames, _ = clusters(8, 16, 8)
    assert len(book.encode(frames).unique()) == 1
    book(frames)  # 15 codes unused: their use falls to 0.5 < 0.6, they restart at frames
    assert book.usage.min() >= 0.5
    assert len(book.encode(frames).unique()) >= 6


def test_cosine_codebook_vectors_are_what_the_head_sees():
    config = SemanticConfig(hidden_dim=16, code_dim=8, codebook_size=32, lookup_dim=4,
                            head_dim=8)
    bottleneck = SemanticBottleneck(config, width=12).eval()
    frames = torch.randn(300, 8)
    assert not bottleneck.codebook_ready
    bottleneck.init_codebook(frames, generator=torch.Generator().manual_seed(0))
    assert bottleneck.codebook_ready
    quantized, tokens, loss = bottleneck.vector_quantize(frames)
    torch.testing.assert_close(quantized, bottleneck.codebook_vectors()[tokens])
    assert torch.equal(tokens, bottleneck.quantize(frames[None])[0])
    assert len(tokens.unique()) > 16  # k-means on more frames than codes: most codes used
    assert loss.ndim == 0 and bottleneck.codebook_vectors().requires_grad is False


def test_ema_quantizer_seeded_by_kmeans_and_legacy_configs():
    legacy = {k: v for k, v in SemanticConfig().to_json().items()
              if k not in ("quantizer", "lookup_dim")}
    assert SemanticConfig.from_json(legacy).quantizer == "ema"
    config = SemanticConfig(hidden_dim=16, code_dim=8, codebook_size=6, quantizer="ema",
                            head_dim=8)
    bottleneck = SemanticBottleneck(config, width=12).eval()
    points, centers = clusters(6, 30, 8)
    bottleneck.init_codebook(points, generator=torch.Generator().manual_seed(0))
    assert bottleneck.codebook_ready
    quantized, tokens, _ = bottleneck.vector_quantize(points)
    torch.testing.assert_close(quantized, bottleneck.codebook_vectors()[tokens])
    assert torch.equal(tokens, bottleneck.quantize(points[None])[0])
    book = bottleneck.vq._codebook
    torch.testing.assert_close(book.embed_avg / book.cluster_size[:, None], book.embed)
