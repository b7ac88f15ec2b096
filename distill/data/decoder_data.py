"""``voxloop distill decoder-data``: audio and its frozen codes from distillation datasets,
cached once for training a frame-rate decoder (``voxloop codec train-decoder``).

Two sides of a dataset's turns:

- ``answer``: the assistant voice (piper:joe) saying the domain's answers, one clip per
  distinct answer text. Held out: the texts whose sha256 falls in the first
  ``heldout_percent`` percent, so no held-out sentence is in the decoder's training text.
- ``user``: the user voices (augmented) of the train split, and for the held-out set the
  ``heldout_voice`` split (voices never trained on).

The shards keep both the 16 kHz audio and the codes the frozen codec made of it, so
nothing is encoded again; every dataset must have been coded by the same codec.
Reads only the arrays it needs from each shard (shards of a dataset still being built are
used as far as they exist).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxloop.audio import MODEL_RATE_HZ
from voxloop.codecs.decoder_data import Clip, write_clips
from voxloop.distill.data.dataset import load_manifest, shard_path
from voxloop.errors import VoxloopError


@dataclass(frozen=True)
class DecoderDataSettings:
    data: tuple[str, ...] = field(default=("data/distill-v1", "data/distill-v2"), metadata={
        "help": "dataset folders (their shards must keep audio)"})
    out: str = field(default="data/decoder-joe", metadata={"help": "decoder data folder"})
    side: str = field(default="answer", metadata={
        "help": "answer: the assistant voice's answers; user: the user voices",
        "choices": ("answer", "user")})
    heldout_percent: float = field(default=5.0, metadata={
        "help": "answer side: percent of the distinct answer texts held out (by text hash)"})
    max_clips: int = field(default=0, metadata={
        "help": "at most this many training clips, the first in shard order (0: all); later "
                "training shards are not read"})
    max_heldout: int = field(default=200, metadata={"help": "at most this many held-out clips"})


def heldout_text(text: str, percent: float) -> bool:
    """Whether an answer text is held out: its sha256 decides, so every build agrees."""
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    return digest % 10_000 < percent * 100


def _shards(folder: str) -> tuple[list[tuple[str, Path]], dict]:
    """(split, path) of every built shard of a dataset, and its codec dict."""
    manifest = load_manifest(folder)
    found = [(split, shard_path(folder, name)) for split, info in manifest["splits"].items()
             for name in info["shards"] if shard_path(folder, name).is_file()]
    return found, manifest["codec"]


def _shard_clips(path: Path, split: str, side: str, wanted) -> list[Clip]:
    """The clips of one shard that ``wanted(record, split)`` accepts (audio read only then)."""
    with np.load(path, allow_pickle=False) as data:
        if f"{side}_audio" not in data.files:  # (before wanted: it marks answers as taken)
            return []
        records = json.loads(str(data["records"]))
        picks = [i for i, r in enumerate(records) if wanted(r, split)]
        if not picks:
            return []
        codes, offsets = data[f"{side}_codes"], data[f"{side}_offsets"]
        audio, audio_offsets = data[f"{side}_audio"], data[f"{side}_audio_offsets"]
    text_key, voice = ("answer_text", None) if side == "answer" else ("prompt_text", "user_voice")
    return [Clip(text=records[i][text_key], voice="piper:joe" if voice is None
                 else records[i][voice], id=records[i]["id"],
                 audio=audio[audio_offsets[i]:audio_offsets[i + 1]].copy(),
                 codes=codes[:, offsets[i]:offsets[i + 1]].copy()) for i in picks]


def build_decoder_data(settings: DecoderDataSettings) -> dict:
    """Write OUT/train.npz and OUT/heldout.npz; returns a summary (also OUT/summary.json)."""
    shards, codec = [], None
    for folder in settings.data:
        found, folder_codec = _shards(folder)
        if codec is not None and folder_codec != codec:
            raise VoxloopError(f"{folder} was coded by {folder_codec}, another codec than "
                               f"{settings.data[0]} ({codec}): recode it first")
        codec = folder_codec
        shards += found
    if not shards:
        raise VoxloopError(f"no built shards in {', '.join(settings.data)}")
    seen: set[str] = set()
    train: list[Clip] = []
    heldout: list[Clip] = []

    def wanted(record: dict, split: str) -> bool:
        if settings.side == "user":
            return split in ("train", "heldout_voice")
        text = record["answer_text"]
        if text in seen:
            return False
        seen.add(text)
        return True

    for split, path in tqdm(shards, desc="decoder data", unit="shard"):
        if settings.max_clips and len(train) >= settings.max_clips and split == "train":
            continue
        for clip in _shard_clips(path, split, settings.side, wanted):
            held = heldout_text(clip.text, settings.heldout_percent) if settings.side == \
                "answer" else split == "heldout_voice"
            (heldout if held else train).append(clip)
    train = train[:settings.max_clips or None]
    heldout = _spread(heldout, settings.max_heldout)
    if not train or not heldout:
        raise VoxloopError(f"{len(train)} training and {len(heldout)} held-out clips: need both "
                           "(do the shards keep audio?)")
    out = Path(settings.out)
    write_clips(out / "train.npz", train, codec)
    write_clips(out / "heldout.npz", heldout, codec)
    summary = {"settings": asdict(settings), "codec": codec,
               "clips": {"train": len(train), "heldout": len(heldout)},
               "hours": {name: sum(len(c.audio) for c in clips) / MODEL_RATE_HZ / 3600
                         for name, clips in (("train", train), ("heldout", heldout))}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _spread(clips: list[Clip], limit: int) -> list[Clip]:
    """At most ``limit`` clips (0: all), evenly spread over the list (plan order)."""
    if not limit or len(clips) <= limit:
        return clips
    return [clips[i] for i in np.linspace(0, len(clips) - 1, limit).astype(int)]
