"""Semantic tokens: Whisper tiny.en's frozen encoder -> pooling -> one VQ codebook.

Supervised semantic tokens, as GLM-4-Voice and CosyVoice's S3 tokenizer make them: the
ASR teacher's own encoder (block-causal, see ``semantic_stream``) hears 16 kHz audio at
50 Hz; a small pooler brings it to the student's frame rate (25 or 12.5 Hz); one codebook
turns each frame into a token: encodec's Euclidean EMA ``VectorQuantization`` (the
default; training seeds it by k-means on many frames, see ``semantic_train``) or the
nearest code by cosine in a small lookup space (``quantizer="cosine"``, ``semantic_vq``).
The pooler and codebook are trained with a CTC loss on the words (``semantic_train``)
through a small head that only training uses.

``SemanticTokenizer``: ``encode(wav [B, T]) -> tokens [B, F]``; ``init_state(B)``,
``step(state, wav [B, T]) -> tokens [B, f]`` and ``flush(state)`` for a stream, whose
tokens concatenate to ``encode``'s and never change once out (``output``: the tokens, the
pooled vectors the VQ quantizes into them, or the encoder frames each token pools);
``codebook_vectors()`` ``[N, D]`` for the student's input embedding.
``with_residual_levels(books)``: the same tokenizer hearing each frame as ``L = 1 +
len(books)`` tokens ``[B, L, F]``: its token, then residual vector quantization of what the
token leaves out, one book after another (fitted after training:
``distill.student.residual_levels``). Saved as a folder
(``config.json`` and a float16 ``model.safetensors`` of the trained parts only: never
Whisper's weights).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from encodec.quantization.core_vq import VectorQuantization
from torch import Tensor, nn

from voxloop.codecs.semantic_config import (  # noqa: F401  (the config lives with no torch)
    CTC_VOCAB,
    ENCODER_RATE_HZ,
    SEMANTIC_KIND,
    SemanticConfig,
)
from voxloop.codecs.semantic_stream import BlockEncoder, EncoderStreamState
from voxloop.codecs.semantic_vq import CosineCodebook, kmeans, nearest
from voxloop.codecs.whisper_encoder import WhisperEncoder, load_whisper_encoder
from voxloop.errors import VoxloopError
from voxloop.models import (
    BUNDLED_WHISPER_SHA256,
    CONFIG_FILE,
    load_model_folder,
    save_model_folder,
)

STREAM_OUTPUTS = ("tokens", "pooled", "frames")


class SemanticBottleneck(nn.Module):
    """The trained part: pooler + VQ (+ the CTC head). Encoder features ``[B, E, 384]``."""

    def __init__(self, config: SemanticConfig, width: int = 384) -> None:
        super().__init__()
        self.config = config
        pooled = width * (config.pool_frames if config.pooling == "conv" else 1)
        self.pool = nn.Sequential(nn.Linear(pooled, config.hidden_dim), nn.GELU(),
                                  nn.Linear(config.hidden_dim, config.code_dim))
        if config.quantizer == "ema":
            self.vq = VectorQuantization(
                config.code_dim, config.codebook_size, decay=config.vq_decay, kmeans_init=True,
                kmeans_iters=20, threshold_ema_dead_code=config.dead_code_threshold,
                commitment_weight=config.commitment_weight)
        else:
            self.vq = CosineCodebook(config.code_dim, config.codebook_size, config.lookup_dim,
                                     config.commitment_weight, config.dead_code_threshold,
                                     config.vq_decay)
        self.head = nn.Sequential(
            nn.Conv1d(config.code_dim, config.head_dim, 3, padding=1), nn.GELU(),
            nn.Conv1d(config.head_dim, config.head_dim, 3, padding=1), nn.GELU(),
            nn.Conv1d(config.head_dim, config.ctc_per_token * (len(CTC_VOCAB) + 1), 1))

    def pooled(self, features: Tensor) -> Tensor:
        """``[B, E, 384]`` (E a multiple of pool_frames) -> ``[B, E / pool_frames, D]``."""
        batch, frames, width = features.shape
        return self.pool_groups(features.reshape(batch, frames // self.config.pool_frames, -1,
                                                 width))

    def pool_groups(self, groups: Tensor) -> Tensor:
        """Encoder frames grouped per token ``[B, F, pool_frames, 384]`` -> ``[B, F, D]``."""
        return self.pool(groups.flatten(2) if self.config.pooling == "conv" else groups.mean(2))

    def quantize(self, pooled: Tensor) -> Tensor:
        """``[B, F, D]`` -> tokens ``[B, F]`` (int64): the nearest code."""
        flat = pooled.reshape(-1, pooled.shape[-1])
        if isinstance(self.vq, CosineCodebook):
            return self.vq.encode(flat).view(pooled.shape[:-1])
        embed = self.vq._codebook.embed  # [N, D]
        # argmin |x - e|^2 = argmax x.e - |e|^2 / 2, one fused multiply-add
        score = torch.addmm(-0.5 * embed.square().sum(1)[None], flat, embed.t())
        return score.argmax(dim=-1).view(pooled.shape[:-1])

    def vector_quantize(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training: frames ``[M, D]`` -> (quantized ``[M, D]`` straight-through, tokens
        ``[M]``, the codebook + commitment loss)."""
        if isinstance(self.vq, CosineCodebook):
            return self.vq(flat)
        quantized, tokens, loss = self.vq(flat.t()[None])  # [1, D, M]
        return quantized[0].t(), tokens.flatten(), loss.sum()

    def continuous(self, flat: Tensor) -> Tensor:
        """Training's warm-up: frames ``[M, D]`` as the head sees them, unquantized."""
        return self.vq.continuous(flat) if isinstance(self.vq, CosineCodebook) else flat

    def codebook_vectors(self) -> Tensor:
        """``[N, D]``: the vector each token stands for (a copy, without gradient)."""
        with torch.no_grad():
            if isinstance(self.vq, CosineCodebook):
                return self.vq.vectors().detach().clone()
            return self.vq._codebook.embed.detach().clone()

    @property
    def codebook_ready(self) -> bool:
        inited = self.vq.inited if isinstance(self.vq, CosineCodebook) else \
            self.vq._codebook.inited
        return bool(inited.all())

    @torch.no_grad()
    def init_codebook(self, flat: Tensor, iters: int = 20,
                      generator: torch.Generator | None = None) -> None:
        """k-means of many frames ``[M, D]`` (more than the codebook has codes) seeds it."""
        if isinstance(self.vq, CosineCodebook):
            self.vq.init_kmeans(flat, iters, generator)
            return
        book = self.vq._codebook
        means, counts = kmeans(flat, book.codebook_size, iters, cosine=False,
                               generator=generator)
        size = counts.float().clamp(min=1.0)  # EMA sums as if one batch held them all
        book.embed.copy_(means)
        book.embed_avg.copy_(means * size[:, None])
        book.cluster_size.copy_(size)
        book.inited.fill_(1.0)

    def ctc_logits(self, quantized: Tensor) -> Tensor:
        """``[B, F, D]`` -> ``[B, F * ctc_per_token, 1 + len(CTC_VOCAB)]``."""
        logits = self.head(quantized.transpose(1, 2))  # [B, r * C, F]
        batch, _, frames = logits.shape
        return logits.view(batch, self.config.ctc_per_token, -1, frames).permute(0, 3, 1, 2) \
            .reshape(batch, frames * self.config.ctc_per_token, -1)


def pad_to_pool(features: Tensor, pool_frames: int) -> Tensor:
    """``[B, E, D]`` -> ``[B, ceil(E / p) * p, D]``: the last frame repeated."""
    extra = -features.shape[1] % pool_frames
    if not extra:
        return features
    return torch.cat([features, features[:, -1:].expand(-1, extra, -1)], dim=1)


@dataclass
class SemanticStreamState:
    encoder: EncoderStreamState
    pending: Tensor  # [B, n, 384] encoder frames not yet pooled into a token


class SemanticTokenizer:
    """Frozen Whisper encoder (block-causal) + the trained bottleneck; see the module doc.

    With residual levels (``with_residual_levels``) every frame is ``L`` tokens: its token,
    then the nearest code of each residual book to what is left (the pooled vector minus the
    vectors of the tokens before), so tokens come as ``[B, L, F]`` instead of ``[B, F]``."""

    def __init__(self, encoder: WhisperEncoder, bottleneck: SemanticBottleneck,
                 name: str = "semantic") -> None:
        self.config, self.name = bottleneck.config, name
        self.bottleneck = bottleneck.eval()
        self.blocks = BlockEncoder(encoder, self.config.block_frames)
        self.residual_books: tuple[Tensor, ...] = ()  # [N_l, D] each: codes of what is left
        self._first_book: Tensor | None = None  # [N, D]: the codebook, kept for the rests

    @property
    def levels(self) -> int:
        """Tokens per frame: 1, and one more per residual level."""
        return 1 + len(self.residual_books)

    def with_residual_levels(self, books) -> SemanticTokenizer:
        """This tokenizer (encoder and bottleneck shared, not copied) hearing residual
        levels: what a frame's tokens so far leave out (pooled vector - their codebook
        vectors) quantized by each of ``books`` (``[N_l, D]`` each, Euclidean) in turn."""
        if isinstance(self.bottleneck.vq, CosineCodebook):
            raise VoxloopError("residual levels quantize the rest of a Euclidean codebook's "
                               "token; this tokenizer's codes are cosine lookups")
        for book in books:
            if book.dim() != 2 or book.shape[1] != self.config.code_dim:
                raise VoxloopError(f"a residual level's book must be [N, "
                                   f"{self.config.code_dim}], got {tuple(book.shape)}")
        twin = copy.copy(self)
        twin.residual_books = tuple(book.detach().float().cpu() for book in books)
        twin._first_book = self.bottleneck.codebook_vectors().float()
        return twin

    @property
    def frame_rate_hz(self) -> float:
        return self.config.frame_rate_hz

    @property
    def cardinality(self) -> int:
        return self.config.codebook_size

    def codebook_vectors(self) -> Tensor:
        """``[N, D]``: the vector each token stands for (a copy: the student's input table)."""
        return self.bottleneck.codebook_vectors()

    def init_state(self, batch_size: int) -> SemanticStreamState:
        return SemanticStreamState(self.blocks.init_state(batch_size),
                                   torch.zeros(batch_size, 0, self.blocks.encoder.width))

    @torch.no_grad()
    def step(self, state: SemanticStreamState, wav: Tensor, output: str = "tokens") -> Tensor:
        """``wav [B, T]`` (16 kHz) -> what it completes, by ``output``: ``tokens`` ``[B, f]``,
        ``pooled`` (the vectors the VQ would quantize into them) ``[B, f, D]``, or ``frames``
        (the encoder frames each token pools) ``[B, f, pool_frames, 384]``."""
        return self._pool_blocks(state, self.blocks.step_blocks(state.encoder, wav), False,
                                 output)

    @torch.no_grad()
    def flush(self, state: SemanticStreamState, output: str = "tokens") -> Tensor:
        """End of the stream: the last of ``output`` (as in ``step``; a partial pool repeats
        its last frame)."""
        return self._pool_blocks(state, self.blocks.flush_blocks(state.encoder), True, output)

    def _pool_blocks(self, state: SemanticStreamState, blocks: list[Tensor],
                     end: bool, output: str) -> Tensor:
        """Tokens block by block, so chunking cannot change the shapes the math runs on."""
        if output not in STREAM_OUTPUTS:
            raise ValueError(f"output must be one of {STREAM_OUTPUTS}, got {output!r}")
        batch, width, per_token = state.pending.shape[0], state.pending.shape[2], \
            self.config.pool_frames
        no_tokens = (batch, 0) if self.levels == 1 else (batch, self.levels, 0)
        out = [{"tokens": torch.zeros(no_tokens, dtype=torch.long),
                "pooled": torch.zeros(batch, 0, self.config.code_dim),
                "frames": torch.zeros(batch, 0, per_token, width)}[output]]
        for i, block in enumerate(blocks):
            pending = torch.cat([state.pending, block], dim=1)
            if end and i == len(blocks) - 1:
                pending = pad_to_pool(pending, per_token)
            ready = pending.shape[1] - pending.shape[1] % per_token
            state.pending = pending[:, ready:]
            if ready:
                groups = pending[:, :ready].reshape(batch, ready // per_token, per_token, width)
                if output == "frames":
                    out.append(groups)
                    continue
                vectors = self.bottleneck.pool_groups(groups)
                out.append(vectors if output == "pooled" else self.quantize(vectors))
        return _cat_frames(out, output)

    @torch.no_grad()
    def pool_groups(self, groups: Tensor) -> Tensor:
        """Frames grouped per token ``[B, F, pool_frames, 384]`` (``output="frames"``) ->
        the pooled vectors ``[B, F, D]``."""
        return self.bottleneck.pool_groups(groups)

    def quantize(self, pooled: Tensor) -> Tensor:
        """Pooled vectors ``[B, F, D]`` -> their tokens ``[B, F]`` (``[B, L, F]`` with
        residual levels)."""
        tokens = self.bottleneck.quantize(pooled)
        if not self.residual_books:
            return tokens
        levels = [tokens]
        rest = (pooled - self._first_book[tokens]).reshape(-1, pooled.shape[-1])
        for book in self.residual_books:
            codes = nearest(rest, book, cosine=False)
            rest = rest - book[codes]
            levels.append(codes.view(tokens.shape))
        return torch.stack(levels, dim=1)

    def encode(self, wav: Tensor, output: str = "tokens") -> Tensor:
        """``wav [B, T]`` (16 kHz) -> tokens ``[B, F]`` (``[B, L, F]`` with residual levels),
        F = ceil(ceil((T // 160) / 2) / p) (or the pooled vectors or grouped frames of them,
        by ``output`` as in ``step``)."""
        state = self.init_state(wav.shape[0])
        return _cat_frames([self.step(state, wav, output), self.flush(state, output)], output)

    def features(self, wav: Tensor) -> Tensor:
        """``wav [B, T]`` -> block-causal encoder features ``[B, E, 384]`` (what training
        caches: the bottleneck turns them into the same tokens as ``encode``)."""
        state = self.blocks.init_state(wav.shape[0])
        return torch.cat([self.blocks.step(state, wav), self.blocks.flush(state)], dim=1)


def _cat_frames(parts: list[Tensor], output: str) -> Tensor:
    """Stream outputs joined along their frame axis: the last of tokens (``[B, F]`` or
    ``[B, L, F]``), the second of the others."""
    return torch.cat(parts, dim=-1 if output == "tokens" else 1)


def check_whisper(config: SemanticConfig) -> None:
    if config.whisper_sha256 != BUNDLED_WHISPER_SHA256:
        raise VoxloopError(f"this semantic tokenizer was trained on a Whisper encoder with "
                           f"sha256 {config.whisper_sha256}; voxloop bundles "
                           f"{BUNDLED_WHISPER_SHA256} (tiny.en) only")


def new_tokenizer(config: SemanticConfig, encoder: WhisperEncoder | None = None,
                  name: str = "semantic") -> SemanticTokenizer:
    """A tokenizer with an untrained bottleneck (the pinned tiny.en encoder by default)."""
    check_whisper(config)
    encoder = encoder or load_whisper_encoder()
    return SemanticTokenizer(encoder, SemanticBottleneck(config, encoder.width), name)


def save_semantic(bottleneck: SemanticBottleneck, folder: str | Path,
                  card: str | None = None) -> Path:
    """Write config.json and a float16 model.safetensors of the bottleneck into ``folder``."""
    return save_model_folder(folder, bottleneck.state_dict(), bottleneck.config.to_json(), card)


def load_semantic(folder: str | Path, encoder: WhisperEncoder | None = None
                  ) -> SemanticTokenizer:
    """Load a folder written by ``save_semantic`` (weights back to float32)."""
    data, weights = load_model_folder(folder, "a semantic tokenizer", "voxloop distill semantic",
                                      kind=SEMANTIC_KIND)
    try:
        config = SemanticConfig.from_json(data)
    except (TypeError, ValueError) as exc:
        raise VoxloopError(f"{Path(folder) / CONFIG_FILE} is not a semantic tokenizer config: "
                           f"{exc}") from exc
    check_whisper(config)
    encoder = encoder or load_whisper_encoder()
    bottleneck = SemanticBottleneck(config, encoder.width)
    bottleneck.load_state_dict(weights)
    return SemanticTokenizer(encoder, bottleneck, name=Path(folder).name)
