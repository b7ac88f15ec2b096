"""Codec checkpoints on disk: a folder with config.json, model.safetensors and a card."""

from __future__ import annotations

import warnings
from pathlib import Path

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.model import NeuralCodec, build_parts
from voxloop.models import load_model_folder, model_name, save_model_folder


def new_codec(config: CodecConfig, name: str = "codec") -> NeuralCodec:
    with warnings.catch_warnings():  # encodec uses the older torch weight_norm API
        warnings.simplefilter("ignore", FutureWarning)
        return NeuralCodec(*build_parts(config), config, name=name)


def save_codec(codec: NeuralCodec, folder: str | Path, card: str | None = None) -> Path:
    """Write config.json and float16 model.safetensors (atomically) into ``folder``."""
    return save_model_folder(folder, codec.state_dict(), codec.config.to_json(), card)


def load_codec_folder(folder: str | Path) -> NeuralCodec:
    """Load a folder written by ``save_codec``; weights come back as float32."""
    data, weights = load_model_folder(folder, "a codec", "voxloop codec train")
    codec = new_codec(CodecConfig.from_json(data), name=model_name(folder))  # found anywhere
    codec.load_state_dict(weights)
    return codec.eval()
