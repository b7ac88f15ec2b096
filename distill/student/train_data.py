"""What a student's training run reads: the pack (a dataset folder packed once), checked to
be heard the way the model hears, the shape it gives a new student, and how often each
turn is drawn."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from voxloop.distill.student.config import StudentConfig
from voxloop.distill.student.pack import PackedData
from voxloop.distill.teachers.domain.data import load_domain
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write


def answer_weights(data: PackedData, rows: np.ndarray, balance: float,
                   refusal_share: float = 0.0) -> np.ndarray | None:
    """Probabilities ``[len(rows)]`` of drawing each turn: (turns with its answer)^-balance,
    normalized; None for uniform (``balance`` and ``refusal_share`` 0). With
    ``refusal_share``, the turns answered with the domain's refusal share that much of the
    probability, evenly (they are many questions with one answer)."""
    if not balance and not refusal_share:
        return None
    texts = data.answer_text[rows]
    _, inverse, counts = np.unique(texts, return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** -balance
    weights /= weights.sum()
    if refusal_share:
        refused = texts == load_domain()["fallback"]
        if not refused.any() or refused.all():
            raise VoxloopError("--refusal-share needs train turns answered with the refusal and "
                               "others: pack a plan built with `voxloop distill synth "
                               "--outside-questions N` beside the others (--extra-train)")
        weights[refused] = refusal_share / refused.sum()
        weights[~refused] *= (1.0 - refusal_share) / weights[~refused].sum()
    return weights


def load_data(data: str | Path, out: Path, vocab: dict | None = None,
              user_input: str | None = None, splits: tuple[str, ...] = (),
              residual_books=()) -> PackedData:
    """A packed ``.npz``, or a dataset folder packed into ``out/data.npz`` (once). With
    ``vocab`` (a trained model's), the data must be tokenized with it and hear what the
    model hears; ``user_input`` (``codes`` or ``semantic``, default: the model's, else
    codes) is what a dataset folder is packed as (semantic: with the model's tokenizer,
    else the bundled one, and the model's ``residual_books`` if it hears residual levels);
    ``splits``: a folder's splits to pack (empty: all; an evaluation's, with a model's
    ``vocab``)."""
    from voxloop.distill.student.pack import pack_dataset

    vocab = vocab or {}
    user_input = user_input or vocab.get("user_input", "codes")
    semantic = vocab.get("semantic", {}).get("name")
    path, packed = Path(data), out / "data.npz"

    def fits(d: PackedData) -> bool:
        return (not vocab or _same_vocab(d, vocab)) and d.user_input == user_input \
            and all(len(d.indices(split)) for split in splits) \
            and (not vocab or _same_levels(d.vocab, vocab))

    if path.suffix == ".npz":
        packed = path
    else:
        state = _dataset_state(path)
        if not packed.is_file() or not fits(PackedData.load(packed)) or \
                _packed_from(packed) != state:
            pack_dataset(path, packed, vocab=vocab or None, user_input=user_input,
                         semantic=semantic, progress=True, splits=splits if vocab else (),
                         residual_books=residual_books)
            atomic_write(_source_file(packed),
                         lambda tmp: tmp.write_text(json.dumps(state)))
    result = PackedData.load(packed)
    if vocab and not _same_vocab(result, vocab):
        raise VoxloopError(f"{packed} was tokenized with another vocabulary than the model's: "
                           "pass the dataset folder instead")
    if vocab and result.user_input != user_input:
        raise VoxloopError(f"{packed} holds user {result.user_input}, the model hears "
                           f"{user_input}: pass the dataset folder instead")
    if vocab and not _same_levels(result.vocab, vocab):
        raise VoxloopError(f"{packed} was heard with other residual levels than the model's "
                           "(or with none where it hears them): pass the dataset folder, or "
                           "pack it with --vocab-from the model")
    return result


def _dataset_state(folder: Path) -> dict:
    """Which dataset a pack was made from, and how far it was built: its path and the
    size of every shard then (a dataset still being built packs what exists)."""
    from voxloop.distill.data.dataset import SHARD_DIR

    shards = sorted((folder / SHARD_DIR).glob("*.npz"))
    return {"dataset": str(folder.resolve()),
            "shards": {p.name: p.stat().st_size for p in shards}}


def _source_file(packed: Path) -> Path:
    return packed.with_name(packed.stem + ".source.json")


def _packed_from(packed: Path) -> dict | None:
    """The ``_dataset_state`` a cached pack was made from (None: unknown, pack again)."""
    try:
        return json.loads(_source_file(packed).read_text())
    except (OSError, ValueError):
        return None


def _same_levels(data_vocab: dict, vocab: dict) -> bool:
    """Whether a pack's tokens are of the residual levels a student hears (or of none)."""
    return (data_vocab.get("semantic") or {}).get("residual_levels") == \
        (vocab.get("semantic") or {}).get("residual_levels")


def _same_vocab(data: PackedData, vocab: dict) -> bool:
    return data.vocab["text"] == vocab["text"] and data.vocab["ctc"] == vocab["ctc"]


def hearing_config(config: StudentConfig, data: PackedData) -> StudentConfig:
    """``config`` made to hear what ``data`` holds: semantic data gives a semantic student
    (one token per frame, the tokenizer's codebook as its frozen input vectors)."""
    if data.user_input != "semantic":
        if config.user_input == "semantic":
            raise VoxloopError("a semantic student needs semantic data: pack it with "
                               "`voxloop distill pack DATASET OUT.npz --user-input semantic`")
        return config
    if config.user_input == "latent":
        raise VoxloopError("the data holds semantic tokens, not codec codes: drop "
                           "--student-user-latent-dim (the tokenizer's codebook is the latent)")
    info, books = data.vocab["semantic"], data.user_codebooks
    levels = 1 + (info.get("residual_levels") or {}).get("levels", 0)
    if books is None or books.shape[0] != levels * info["cardinality"]:
        raise VoxloopError("this semantic pack has no codebook of its tokenizer: pack it again")
    if levels == 1 and config.residual_weight:
        raise VoxloopError("this student hears residual levels and the pack has none: pack "
                           "it with --vocab-from the student")
    weight = (config.residual_weight or 1.0) if levels > 1 else 0.0
    return replace(config, user_input="semantic", user_vocab=int(info["cardinality"]),
                   k_in=levels, user_latent_dim=int(books.shape[1]), residual_weight=weight,
                   user_frame_rate_hz=float(info["frame_rate_hz"]))
