"""Codec checkpoints on disk: a folder with config.json, model.safetensors and a card."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from voxloop.codecs.config import CodecConfig
from voxloop.codecs.model import NeuralCodec, build_parts
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write


def new_codec(config: CodecConfig, name: str = "codec") -> NeuralCodec:
    with warnings.catch_warnings():  # encodec uses the older torch weight_norm API
        warnings.simplefilter("ignore", FutureWarning)
        return NeuralCodec(*build_parts(config), config, name=name)


def save_codec(codec: NeuralCodec, folder: str | Path, card: str | None = None) -> Path:
    """Write config.json and float16 model.safetensors (atomically) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().to(torch.float16 if v.is_floating_point() else v.dtype)
             .contiguous()
             for k, v in codec.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(
        state, str(tmp), metadata={"format": "pt", "kind": codec.config.kind}))
    (folder / "config.json").write_text(json.dumps(codec.config.to_json(), indent=2) + "\n")
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def load_codec_folder(folder: str | Path) -> NeuralCodec:
    """Load a folder written by ``save_codec``; weights come back as float32."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise VoxloopError(f"{folder} is not a codec folder: it needs config.json and "
                           "model.safetensors (train one with `voxloop codec train`)")
    config = CodecConfig.from_json(json.loads(config_path.read_text()))
    codec = new_codec(config, name=folder.name)
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(str(weights_path)).items()}
    codec.load_state_dict(state)
    return codec.eval()
