"""Semantic tokens of a dataset's user audio, computed once per shard and kept on disk.

A semantic pack needs the tokenizer's tokens of every turn's 16 kHz user audio, and the
Whisper encoder under them is most of the pack's cost (about an hour of one core for a
35,000-turn dataset). So the tokens of each dataset shard are kept in
``{dataset}/semantic-tokens/{tokenizer sha256[:12]}/{shard}.npz`` (all or nothing, like the
shards; the tokens of the audio heard from ``skip`` samples in, another alignment of the
token grid, in ``{sha256[:12]}-skip{skip}/``), ``fill_cache`` computes the missing ones
with ``jobs`` processes of one thread each, and a repack (other targets, more shards built
since) or a killed pack reuses them.

One cache file holds ``ids`` (a JSON list of the shard's turn ids), ``tokens`` int16
``[sum F]`` and ``offsets`` int64 ``[N + 1]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

CACHE_DIR = "semantic-tokens"

_worker: dict = {}  # the tokenizer of a fill_cache worker process (spawned, one thread)


def cache_folder(dataset: str | Path, tokenizer_sha256: str, skip_samples: int = 0,
                 residual_sha256: str | None = None) -> Path:
    name = (tokenizer_sha256[:12] + (f"-rvq{residual_sha256[:12]}" if residual_sha256 else "")
            + (f"-skip{skip_samples}" if skip_samples else ""))
    return Path(dataset) / CACHE_DIR / name


def skipped(examples, skip_samples: int) -> Iterator:
    """``DialogueExample``s with their user audio heard from ``skip_samples`` in."""
    import dataclasses

    for ex in examples:
        yield (ex if not skip_samples or ex.user_audio is None
               else dataclasses.replace(ex, user_audio=ex.user_audio[skip_samples:]))


def finished_shards(dataset: str | Path, splits: tuple[str, ...] = ()) -> list[str]:
    """The names of the dataset's shards that exist (a dataset may still be being built),
    of ``splits`` (empty: all)."""
    from voxloop.distill.data.dataset import load_manifest, shard_path

    manifest = load_manifest(dataset)
    return [shard for name in sorted(manifest["splits"]) if not splits or name in splits
            for shard in manifest["splits"][name]["shards"]
            if shard_path(dataset, shard).is_file()]


def encode_shard(dataset: str | Path, shard: str, tokenizer, out: Path,
                 batch_size: int = 32, skip_samples: int = 0) -> int:
    """Tokens of one shard's user audio (from ``skip_samples`` in) -> ``out`` (atomically);
    returns its turn count."""
    from voxloop.distill.data.dataset import read_shard, shard_path
    from voxloop.distill.student.user_tokens import with_semantic_tokens
    from voxloop.training import atomic_write

    examples, _ = read_shard(shard_path(dataset, shard))
    tokened = list(with_semantic_tokens(skipped(examples, skip_samples), tokenizer, batch_size))
    parts = [e.user_codes for e in tokened]  # [levels, F] each
    offsets = np.concatenate([[0], np.cumsum([p.shape[1] for p in parts])]).astype(np.int64)
    tokens = np.concatenate(parts, axis=1).astype(np.int16) if parts else \
        np.zeros((tokenizer.levels, 0), np.int16)
    ids = json.dumps([e.id for e in tokened])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, ids=np.array(ids), tokens=tokens, offsets=offsets)

    atomic_write(out, write)
    return len(tokened)


def read_cache(path: Path) -> dict[str, np.ndarray]:
    """One cache file -> ``{turn id: tokens int16 [levels, F]}`` (files of one level made
    before levels existed hold ``[F]``)."""
    with np.load(path) as data:
        ids = json.loads(str(data["ids"]))
        tokens, offsets = data["tokens"], data["offsets"]
    tokens = tokens if tokens.ndim == 2 else tokens[None]
    return {tid: tokens[:, offsets[i]:offsets[i + 1]] for i, tid in enumerate(ids)}


def _init_worker(tokenizer_folder: str, residual_books: list[np.ndarray]) -> None:
    import torch

    from voxloop.codecs.semantic import load_semantic

    torch.set_num_threads(1)  # one process per core beats threads on these small batches
    tokenizer = load_semantic(tokenizer_folder)
    if residual_books:
        tokenizer = tokenizer.with_residual_levels([torch.from_numpy(b) for b in residual_books])
    _worker["tokenizer"] = tokenizer


def _encode_in_worker(task: tuple[str, str, str, int, int]) -> int:
    dataset, shard, out, batch_size, skip_samples = task
    return encode_shard(dataset, shard, _worker["tokenizer"], Path(out), batch_size,
                        skip_samples)


def fill_cache(dataset: str | Path, tokenizer, tokenizer_folder: Path, tokenizer_sha256: str,
               jobs: int = 1, batch_size: int = 32, progress: bool = False,
               skip_samples: int = 0, shards: list[str] | None = None) -> Path:
    """Compute the cache files that are missing, ``jobs`` processes at once (1: here, with
    ``tokenizer``), of the audio heard from ``skip_samples`` in (of ``shards``; None: every
    finished shard); returns the cache folder."""
    import multiprocessing

    from tqdm import tqdm

    from voxloop.distill.student.residual_levels import books_sha256

    books = tokenizer.residual_books
    folder = cache_folder(dataset, tokenizer_sha256, skip_samples,
                          books_sha256(books) if books else None)
    shards = finished_shards(dataset) if shards is None else shards
    todo = [s for s in shards if not (folder / s).is_file()]
    skip = f", {skip_samples} samples in" if skip_samples else ""
    bar = tqdm(total=len(todo), desc=f"semantic tokens ({jobs} jobs{skip})", unit="shard",
               disable=not progress or not todo)
    if jobs <= 1:
        for shard in todo:
            encode_shard(dataset, shard, tokenizer, folder / shard, batch_size, skip_samples)
            bar.update()
    elif todo:
        tasks = [(str(dataset), s, str(folder / s), batch_size, skip_samples) for s in todo]
        context = multiprocessing.get_context("spawn")  # no torch state forked
        pool = context.Pool(jobs, _init_worker, (str(tokenizer_folder),
                                                 [b.numpy() for b in books]))
        try:
            for _ in pool.imap_unordered(_encode_in_worker, tasks):
                bar.update()
        except BaseException:
            pool.terminate()
            raise
        finally:  # workers exit on their own: no semaphores leaked at shutdown
            pool.close()
            pool.join()
    bar.close()
    return folder


def with_cached_tokens(examples, folder: Path) -> Iterator:
    """``DialogueExample``s -> the same with ``user_codes`` their cached tokens
    ``int16 [levels, F]`` and no audio kept; a turn with no cached tokens is an error."""
    import dataclasses

    from voxloop.errors import VoxloopError

    tokens: dict[tuple[str, str], np.ndarray] = {}  # (split, id): ids are unique per split
    for path in sorted(folder.glob("*.npz")):
        split = path.name.rsplit("-", 1)[0]  # shard names are f"{split}-{index:05d}.npz"
        tokens.update({(split, tid): t for tid, t in read_cache(path).items()})
    for ex in examples:
        if (ex.split, ex.id) not in tokens:
            raise VoxloopError(f"turn {ex.id} ({ex.split}) has no cached semantic tokens in "
                               f"{folder}: delete the folder and pack again")
        yield dataclasses.replace(ex, user_codes=tokens[ex.split, ex.id],
                                  user_audio=None, answer_audio=None)
