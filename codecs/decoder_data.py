"""Decoder training data: audio and its frozen codec codes, computed once and kept together.

A decoder data folder holds ``train.npz`` and ``heldout.npz`` (and a ``README.md`` saying
where they came from). Each npz has, for N clips:

- ``audio`` int16 ``[sum T]`` at the codec's rate and ``audio_offsets`` int64 ``[N + 1]``;
- ``codes`` int16 ``[K, sum F]`` (``F = ceil(T / hop)``) and ``code_offsets`` int64 ``[N + 1]``;
- ``clips``: one JSON string, a list of N ``{"text", "voice", "id"}``;
- ``codec``: one JSON string, ``{"name", "sha256"}`` of the codec the codes came from.

``write_clips`` / ``read_clips`` are the only readers and writers (the builder lives in
``voxloop.distill.data.decoder_data``; the trainer only reads).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxloop.errors import VoxloopError
from voxloop.training import atomic_write

SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Clip:
    text: str
    voice: str
    id: str
    audio: np.ndarray  # int16 [T]
    codes: np.ndarray  # int16 [K, F]


def _concat(parts: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([p.shape[axis] for p in parts])]).astype(np.int64)
    return np.concatenate(parts, axis=axis), offsets


def write_clips(path: str | Path, clips: list[Clip], codec: dict) -> Path:
    """Write ``clips`` as one npz, atomically. ``codec``: {"name", "sha256"}."""
    if not clips:
        raise VoxloopError(f"refusing to write an empty decoder data file {path}")
    audio, audio_offsets = _concat([np.asarray(c.audio, np.int16) for c in clips], axis=0)
    codes, code_offsets = _concat([np.asarray(c.codes, np.int16) for c in clips], axis=1)
    meta = [{"text": c.text, "voice": c.voice, "id": c.id} for c in clips]
    buffer = io.BytesIO()
    np.savez(buffer, audio=audio, audio_offsets=audio_offsets, codes=codes,
             code_offsets=code_offsets, clips=np.array(json.dumps(meta)),
             codec=np.array(json.dumps(codec)))
    return atomic_write(Path(path), lambda tmp: tmp.write_bytes(buffer.getvalue()))


def read_clips(folder: str | Path, split: str) -> tuple[list[Clip], dict]:
    """The clips of ``split`` (train or heldout) and the codec dict they were coded with."""
    path = Path(folder) / f"{split}.npz"
    if not path.is_file():
        raise VoxloopError(f"{path} not found: build decoder data with `voxloop distill "
                           "decoder-data --out FOLDER`")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["clips"]))
    a_off, c_off = arrays["audio_offsets"], arrays["code_offsets"]
    clips = [Clip(m["text"], m["voice"], m["id"], arrays["audio"][a_off[i]:a_off[i + 1]],
                  arrays["codes"][:, c_off[i]:c_off[i + 1]]) for i, m in enumerate(meta)]
    return clips, json.loads(str(arrays["codec"]))


def check_codes_of(codec_name: str, data_codec: dict) -> Path:
    """The folder of ``codec_name``, refused unless it made the data's cached codes
    (``data_codec``: ``read_clips``' {name, sha256}): another codec's decoder would decode
    them without a word, into noise."""
    from voxloop.codecs.registry import codec_folder
    from voxloop.models import weights_sha256

    folder = codec_folder(codec_name)
    sha = weights_sha256(folder)
    if data_codec.get("sha256") and sha != data_codec["sha256"]:
        raise VoxloopError(f"the data's codes were made by {data_codec['name']} "
                           f"({data_codec['sha256'][:12]}), not by {folder} ({sha[:12]})")
    return folder
