"""A semantic student's residual levels of hearing: what its tokenizer's token leaves out.

The tokenizer pools 40 ms of Whisper's encoder frames into a vector and names the nearest
of its 1,024 codes; the student reads that code's vector. The rest (the pooled vector
minus the code's) still carries what was said: a frame near the border of two codes is
heard as one of them. Read with half the rest added back, the bundled student's words are
right more often without any training (its card has the numbers). Residual levels keep its
input discrete: the rest is quantized by residual vector quantization, three books of
1,024 codes fitted one after another by k-means on the rests of a dataset's training
turns, and the student reads the token's vector plus ``residual_weight`` times the sum of
the residual codes' (``K_in`` = 1 + levels; the model sums its user channels as it always
has). Streams, packs and caches carry ``1 + levels`` tokens per frame.

    books = fit_residual_levels(tokenizer, clips)           # 3 x [1024, D], k-means
    wider, vocab = add_residual_levels(student, vocab, tokenizer, books, 0.5)
    tokenizer = student_tokenizer(tokenizer, wider)         # hears [B, 4, F] tokens
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from voxloop.errors import VoxloopError

RESIDUAL_LEVELS = 3  # what they leave: 48, 27 and 17 % of the rests' energy (the card)


def rests(tokenizer, pooled: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Pooled vectors ``[F, D]`` -> what their tokens leave out ``[F, D]`` (level one);
    ``codebook``: the tokenizer's ``codebook_vectors()`` (a copy: take it once)."""
    return pooled - codebook[tokenizer.bottleneck.quantize(pooled[None])[0]]


@torch.no_grad()
def fit_residual_levels(tokenizer, clips: Sequence[np.ndarray], levels: int = RESIDUAL_LEVELS,
                        iters: int = 20, seed: int = 0, batch_size: int = 32,
                        progress: bool = False) -> list[torch.Tensor]:
    """Residual books ``levels x [N, D]`` (N: the tokenizer's codes, as many as a student
    has rows for each level) from every frame of ``clips`` (float32 16 kHz): k-means of the
    rests, then of what each book leaves, in turn."""
    from tqdm import tqdm

    from voxloop.codecs.semantic_vq import kmeans, nearest
    from voxloop.distill.student.user_tokens import pooled_clips

    clips = sorted(clips, key=len)  # like lengths batched: less padding
    codebook, left = tokenizer.codebook_vectors().float(), []
    for start in tqdm(range(0, len(clips), batch_size), desc="rests of the tokens",
                      unit="batch", disable=not progress):
        left += [rests(tokenizer, pooled, codebook)
                 for pooled in pooled_clips(tokenizer, clips[start:start + batch_size])]
    frames = torch.cat(left) if left else torch.zeros(0, tokenizer.config.code_dim)
    codes = tokenizer.cardinality
    if len(frames) < 4 * codes:
        raise VoxloopError(f"{len(frames)} frames are too few to fit {codes} codes per "
                           f"residual level: give at least {4 * codes} (more turns)")
    books = []
    for level in range(levels):
        book, _ = kmeans(frames, codes, iters, cosine=False,
                         generator=torch.Generator().manual_seed(seed + level))
        frames = frames - book[nearest(frames, book, cosine=False)]
        books.append(book)
    return books


def train_clips(dataset, turns: int, seed: int = 0) -> list[np.ndarray]:
    """The user audio (float32 16 kHz) of about ``turns`` train turns of ``dataset``, from
    shards drawn at random (seeded), so every kind of question and voice is among them."""
    from voxloop.audio import from_pcm16
    from voxloop.distill.data.dataset import iter_examples
    from voxloop.distill.student.token_cache import finished_shards

    shards = finished_shards(dataset, ("train",))
    if not shards:
        raise VoxloopError(f"{dataset} has no train shard built yet")
    order = np.random.default_rng(seed).permutation(len(shards))
    clips = []
    for index in order:
        for example in iter_examples(dataset, "train", shards=[shards[index]]):
            if example.user_audio is None:
                raise VoxloopError(f"{dataset} keeps no user audio: build it with "
                                   "`voxloop distill synth` (it keeps the audio by default)")
            clips.append(from_pcm16(example.user_audio))
        if len(clips) >= turns:
            break
    return clips[:turns]


def books_sha256(books: Sequence[torch.Tensor]) -> str:
    """The books' fingerprint, at the float16 a saved student keeps them in."""
    digest = hashlib.sha256()
    for book in books:
        digest.update(book.detach().cpu().half().numpy().tobytes())
    return digest.hexdigest()


def residual_info(tokenizer, silence: list[int]) -> dict:
    """What a vocabulary keeps of a tokenizer's residual levels: how many, their codes,
    fingerprint, and the tokens of silence at each (``silence``: the tokenizer's
    ``silence_tokens``, every level's)."""
    return {"levels": len(tokenizer.residual_books),
            "codes": int(tokenizer.residual_books[0].shape[0]),
            "sha256": books_sha256(tokenizer.residual_books), "silence": silence[1:]}


def check_widening(config, levels: int, weight: float) -> None:
    """A clear error unless a student of ``config`` can hear ``levels`` residual levels at
    ``weight``: a semantic student hearing one token per frame, at most ``k_out - 1`` levels
    (its input channels stay as many), a weight above 0."""
    if config.user_input != "semantic" or config.k_in != 1:
        raise VoxloopError("residual levels are for a semantic student hearing one token "
                           "per frame" + (" (this one hears them already)"
                                          if config.residual_weight else ""))
    if not 1 <= levels <= config.k_out - 1:
        raise VoxloopError(f"give 1 to {config.k_out - 1} residual levels, not {levels}")
    if not weight > 0:
        raise VoxloopError(f"the residual levels' weight must be above 0, not {weight}")


def add_residual_levels(model, vocab: dict, tokenizer, books: Sequence[torch.Tensor],
                        weight: float):
    """A semantic student hearing one token per frame -> the same student hearing
    ``books``' residual levels too, at ``weight``, and its vocabulary naming them (``tokenizer``
    is its one-level tokenizer). Every weight carries over: the embedding rows of text and
    audio move up, the new user rows stay unused (user frames enter through
    ``user_codebooks``), so at ``weight`` 0 it would answer exactly as before."""
    from voxloop.distill.student.model import Student
    from voxloop.distill.student.user_tokens import silence_tokens

    check_widening(model.config, len(books), weight)
    config, n = model.config, model.config.user_vocab
    for book in books:
        if book.shape != model.user_codebooks.shape:
            raise VoxloopError(f"a residual book is {tuple(book.shape)}; this student's "
                               f"codebook is {tuple(model.user_codebooks.shape)}")
    books = [book.detach().cpu().half().float() for book in books]  # as it will be saved
    wide = Student(replace(config, k_in=1 + len(books), residual_weight=float(weight)))
    state = model.state_dict()
    embed = state["embed.weight"]
    state["embed.weight"] = torch.cat([embed[:n], embed.new_zeros(len(books) * n,
                                                                   embed.shape[1]), embed[n:]])
    state["user_codebooks"] = torch.cat([state["user_codebooks"], *(b.to(embed)
                                                                     for b in books)])
    wide.load_state_dict(state)
    heard = tokenizer.with_residual_levels(books)
    info = residual_info(heard, silence_tokens(heard))
    return wide.eval(), {**vocab, "semantic": {**vocab["semantic"], "residual_levels": info}}


def residual_books(model) -> list[torch.Tensor]:
    """The residual levels' books a student hears (none: it hears one token per frame)."""
    if not model.config.residual_weight:
        return []
    n = model.config.user_vocab
    books = model.user_codebooks.detach().float().cpu()
    return [books[k * n:(k + 1) * n] for k in range(1, model.config.k_in)]


def student_tokenizer(tokenizer, model):
    """``tokenizer`` as ``model`` hears with it: with its residual levels, if it has any."""
    books = residual_books(model)
    return tokenizer.with_residual_levels(books) if books else tokenizer
