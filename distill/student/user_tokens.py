"""What a semantic student hears: the semantic tokenizer's tokens of the user's 16 kHz audio.

Serving runs the tokenizer as a stream (block by block while the user speaks, then a
flush: ``realtime.engines.ears``). Packing runs it offline on many clips at once:
``encode_clips`` pads a batch of clips and gives each the attention mask the stream
uses (block-causal, and blind to the padding), so training hears the tokens serving
hears: the same math, computed as one pass instead of block by block (equal up to float
rounding, which can flip a near tie between two codes; the tests and
``scripts/bench_hearing.py`` measure how often).

The tokenizer that made a student's tokens is named in its ``vocab.json``:
``vocab["semantic"] = {name, sha256, whisper_sha256, frame_rate_hz, cardinality,
code_dim, silence}`` (``silence``: the token of digital silence, what augmentation pads
with); ``vocab["user_input"] = "semantic"``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from voxloop.audio import MODEL_RATE_HZ, from_pcm16
from voxloop.codecs.semantic import SemanticTokenizer, load_semantic
from voxloop.codecs.semantic_stream import HALF_WINDOW, block_causal_mask, causal_log_mel
from voxloop.codecs.semantic_tokens import find_semantic
from voxloop.errors import VoxloopError
from voxloop.models import models_dir, weights_sha256

SILENCE_S = 2.0  # zeros encoded to find the token of silence


def load_tokenizer(semantic: str | Path | SemanticTokenizer | None
                   ) -> tuple[SemanticTokenizer, Path | None]:
    """A tokenizer given as itself, a folder or a bundled name (default voxloop-semantic),
    and its folder (None for one given as an object)."""
    if isinstance(semantic, SemanticTokenizer):
        return semantic, None
    folder = find_semantic(semantic)
    return load_semantic(folder), folder


def silence_tokens(tokenizer: SemanticTokenizer) -> list[int]:
    """The tokens the tokenizer gives to a steady stretch of digital silence, one per level
    (its token, then each residual level's)."""
    tokens = as_frames(tokenizer.encode(torch.zeros(1, int(SILENCE_S * MODEL_RATE_HZ))).numpy())
    return tokens[:, tokens.shape[1] // 2].tolist()


def semantic_info(tokenizer: SemanticTokenizer, folder: Path | None) -> dict:
    """The fingerprint a student keeps of the tokenizer it hears with (``vocab["semantic"]``)."""
    from voxloop.distill.student.residual_levels import residual_info

    name = tokenizer.name
    if folder is not None:
        bundled = folder.resolve().parent == models_dir().resolve()
        name = folder.name if bundled else str(folder.resolve())
    silence = silence_tokens(tokenizer)
    info = {"name": name, "sha256": weights_sha256(folder) if folder else None,
            "whisper_sha256": tokenizer.config.whisper_sha256,
            "frame_rate_hz": tokenizer.frame_rate_hz, "cardinality": tokenizer.cardinality,
            "code_dim": int(tokenizer.codebook_vectors().shape[1]), "silence": silence[0]}
    if tokenizer.residual_books:
        info["residual_levels"] = residual_info(tokenizer, silence)
    return info


def bundled_name(vocab: dict) -> dict:
    """``vocab`` with its tokenizer named by its bundled name when a tokenizer under
    ``models/`` has the weights the student's tokens were made with (a student trained on
    tokens of ``runs/.../model``, saved after that tokenizer was copied into ``models/``),
    so the saved student finds its ears on any machine; else ``vocab`` unchanged."""
    info = vocab.get("semantic") or {}
    if not info.get("sha256"):
        return vocab
    names = [folder.name for folder in sorted(models_dir().glob("*"))
             if weights_sha256(folder) == info["sha256"]]
    if not names or info["name"] in names:
        return vocab
    return {**vocab, "semantic": {**info, "name": names[0]}}


def load_student_semantic(name: str | None, vocab: dict, model=None) -> SemanticTokenizer:
    """The tokenizer named (default: the one the student's tokens came from), hearing as
    ``model`` hears (its residual levels, which a student naming them needs); warns when
    its weights are not the ones those tokens were made with, refuses another rate or
    size."""
    from voxloop.distill.student.residual_levels import student_tokenizer

    info = vocab.get("semantic")
    if not info:
        raise VoxloopError("this student hears codec codes, not semantic tokens")
    if info.get("residual_levels") and model is None:
        raise VoxloopError("this student hears residual levels, kept in its weights: load "
                           "its tokenizer with the model")
    tokenizer, folder = load_tokenizer(name or info["name"])
    if model is not None:
        tokenizer = student_tokenizer(tokenizer, model)
    sha = weights_sha256(folder) if folder else None
    if info.get("sha256") and sha and sha != info["sha256"]:
        warnings.warn(f"semantic tokenizer {folder} has other weights ({sha[:12]}) than the "
                      f"tokens the student learned ({info['sha256'][:12]}): it will mishear; "
                      "retrain the student on repacked data", stacklevel=2)
    if (tokenizer.frame_rate_hz, tokenizer.cardinality) != (info["frame_rate_hz"],
                                                             info["cardinality"]):
        raise VoxloopError(f"{folder or tokenizer.name} makes {tokenizer.cardinality} tokens "
                           f"at {tokenizer.frame_rate_hz:g} Hz; the student hears "
                           f"{info['cardinality']} at {info['frame_rate_hz']:g} Hz")
    return tokenizer


def as_frames(tokens: np.ndarray) -> np.ndarray:
    """One clip's tokens ``[F]``, ``[1, F]``, ``[L, F]`` or ``[1, L, F]`` -> the student's user
    frames ``[levels, F]``."""
    return tokens.reshape(tokens.shape[-2] if tokens.ndim > 1 else 1, tokens.shape[-1])


# --- offline, many clips at once ----------------------------------------------------------

@torch.no_grad()
def encode_clips(tokenizer: SemanticTokenizer, clips: list[np.ndarray]) -> list[np.ndarray]:
    """float32 16 kHz clips ``[T_i]`` -> tokens ``[F_i]`` each (int64; ``[L, F_i]`` from a
    tokenizer with residual levels), as the stream gives them (``pooled_clips``)."""
    return [tokenizer.quantize(pooled[None])[0].numpy()
            for pooled in pooled_clips(tokenizer, clips)]


@torch.no_grad()
def pooled_clips(tokenizer: SemanticTokenizer, clips: list[np.ndarray]) -> list[torch.Tensor]:
    """float32 16 kHz clips ``[T_i]`` -> the pooled vectors ``[F_i, D]`` their tokens
    quantize, as the stream gives them; one padded pass for clips of up to 30 s, the stream
    itself for the rest."""
    encoder = tokenizer.blocks.encoder
    out: list[torch.Tensor | None] = [None] * len(clips)
    batch = []
    for i, clip in enumerate(clips):
        frames = (len(clip) // 160 + 1) // 2
        if len(clip) <= HALF_WINDOW or frames > encoder.max_frames:  # too short to reflect,
            out[i] = tokenizer.encode(torch.from_numpy(clip)[None], "pooled")[0]  # or > 30 s
        else:
            batch.append(i)
    if batch:
        for i, pooled in zip(batch, _pool_padded(tokenizer, [clips[i] for i in batch]),
                             strict=True):
            out[i] = pooled
    return out


def _pool_padded(tokenizer: SemanticTokenizer, clips: list[np.ndarray]) -> list[torch.Tensor]:
    """Clips of 201 samples to 30 s -> pooled vectors, in one batch (see ``pooled_clips``)."""
    encoder, bottleneck = tokenizer.blocks.encoder, tokenizer.bottleneck
    device = encoder.positions.device
    mels = [causal_log_mel(torch.from_numpy(c).to(device)[None])[0] for c in clips]  # [80, M]
    num_mel = torch.tensor([m.shape[1] for m in mels], device=device)
    mel = torch.nn.utils.rnn.pad_sequence([m.T for m in mels], batch_first=True).transpose(1, 2)
    hidden = F.gelu(encoder.conv1(mel))  # zero mel past a clip's end: conv1's own padding
    valid = torch.arange(mel.shape[2], device=device)[None] < num_mel[:, None]
    hidden = hidden * valid[:, None].to(hidden)  # conv2's zero padding past the end
    x = F.gelu(encoder.conv2(hidden)).transpose(1, 2)  # [B, E, D]
    num_frames = (num_mel + 1) // 2
    width = x.shape[1]
    x = x + encoder.positions[:width]
    keys = torch.arange(width, device=device)
    mask = block_causal_mask(width, tokenizer.config.block_frames).to(device)[None] \
        & (keys[None, None, :] < num_frames[:, None, None])  # [B, E, E]
    for layer in encoder.layers:
        x, _ = layer(x, mask=mask[:, None])
    x = encoder.ln_post(x)
    pool = tokenizer.config.pool_frames
    num_tokens = -(-num_frames // pool)
    index = torch.arange(width + -width % pool, device=device)[None]
    index = torch.minimum(index, num_frames[:, None] - 1)  # the last frame repeated to a
    x = torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[2]))  # whole pool
    pooled = bottleneck.pooled(x).cpu()  # [B, F, D]
    return [pooled[b, :n] for b, n in enumerate(num_tokens.tolist())]


def with_semantic_tokens(examples: Iterable, tokenizer: SemanticTokenizer,
                         batch_size: int = 32, window: int = 1024,
                         progress: bool = False, total: int | None = None) -> Iterator:
    """``DialogueExample``s (with user audio) -> the same with ``user_codes`` the tokens
    ``int16 [levels, F]`` and no audio kept. Clips of like length are batched together,
    ``window`` examples at a time; the order is kept."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="semantic tokens", unit="turn", disable=not progress)
    group = []

    def flush_group() -> Iterator:
        order = sorted(range(len(group)), key=lambda i: len(group[i].user_audio))
        tokens: list[np.ndarray | None] = [None] * len(group)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            clips = [from_pcm16(np.asarray(group[i].user_audio)) for i in rows]
            for i, t in zip(rows, encode_clips(tokenizer, clips), strict=True):
                tokens[i] = t
            bar.update(len(rows))
        for ex, t in zip(group, tokens, strict=True):
            yield dataclasses.replace(ex, user_codes=as_frames(t).astype(np.int16),
                                      user_audio=None, answer_audio=None)
        group.clear()

    for ex in examples:
        if ex.user_audio is None:
            raise VoxloopError(f"turn {ex.id} kept no user audio: semantic tokens need the "
                               "dataset's 16 kHz audio (voxloop distill synth keeps it)")
        group.append(ex)
        if len(group) >= window:
            yield from flush_group()
    if group:
        yield from flush_group()
    bar.close()
