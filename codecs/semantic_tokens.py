"""Semantic tokens on disk (npz): what ``voxloop codec semantic`` writes.

The npz holds ``tokens [F]`` (int16 up to 32768 codes), ``frame_rate_hz``, ``cardinality``,
``sample_rate_hz`` (16 kHz: what the encoder hears), ``num_samples`` (of the input at
16 kHz) and the tokenizer's name and kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from voxloop.audio import MODEL_RATE_HZ, read_wav, resample
from voxloop.codecs.semantic import SemanticTokenizer, load_semantic
from voxloop.codecs.semantic_config import SEMANTIC_KIND
from voxloop.codecs.tokens import check_heard
from voxloop.errors import VoxloopError
from voxloop.models import DEFAULT_SEMANTIC, find_model


def find_semantic(name_or_dir: str | Path | None = None) -> Path:
    """The folder of a semantic tokenizer given as a path or a bundled name (None: the
    bundled default)."""
    return find_model(name_or_dir or DEFAULT_SEMANTIC, "semantic tokenizer",
                      marker="model.safetensors", config_kinds=(SEMANTIC_KIND,))


def load_semantic_model(name_or_dir: str | Path) -> SemanticTokenizer:
    """A bundled semantic tokenizer by name (under ``models/``) or a folder."""
    return load_semantic(find_semantic(name_or_dir))


def semantic_file(wav_path: str | Path, npz_path: str | Path, model: str | Path) -> str:
    samples, rate_hz = read_wav(wav_path)  # a clear error when the file is missing
    check_heard(samples, wav_path)
    tokenizer = load_semantic_model(model)
    samples = resample(samples, rate_hz, MODEL_RATE_HZ)
    tokens = tokenizer.encode(torch.from_numpy(samples)[None])[0]
    if not len(tokens):
        raise VoxloopError(f"{wav_path} holds {1000 * len(samples) / MODEL_RATE_HZ:.0f} ms of "
                           f"audio, less than one {1000 / tokenizer.frame_rate_hz:g} ms token: "
                           "nothing to write")
    Path(npz_path).parent.mkdir(parents=True, exist_ok=True)
    dtype = np.int16 if tokenizer.cardinality <= 1 << 15 else np.int32
    np.savez(npz_path, tokens=tokens.numpy().astype(dtype),
             frame_rate_hz=tokenizer.frame_rate_hz, cardinality=tokenizer.cardinality,
             sample_rate_hz=MODEL_RATE_HZ, num_samples=len(samples), model=tokenizer.name,
             kind=tokenizer.config.kind)
    return (f"{len(tokens)} tokens at {tokenizer.frame_rate_hz:g} Hz "
            f"({tokenizer.cardinality} codes, tokenizer {tokenizer.name})")
