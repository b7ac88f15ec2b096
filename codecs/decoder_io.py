"""Frame-rate decoders on disk, and which one a codec decodes with.

A codec folder may hold trained decoders for its frozen codes:
``CODEC/decoders/NAME/{config.json, model.safetensors, README.md}`` (float16 weights).
``seanet`` always names the codec's own decoder. Two names choose by what is shipped:
``auto`` (any voice: ``general``, else ``seanet``) and ``answers`` (the assistant's voice:
``assistant``, else ``auto``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from voxloop.codecs.decoder_config import DECODER_KIND, DECODERS_DIR, SEANET, FrameDecoderConfig
from voxloop.codecs.frame_decoder import FrameDecoder
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write

# "auto" serves any voice: the assistant decoder, trained on piper:joe only, decodes other
# voices worse than the SEANet decoder (its card: WER +87 points at K = 4 vs +39), so auto
# never picks it; "answers" does, for codes of the assistant's voice.
AUTO_DECODERS = ("general",)
ANSWER_DECODERS = ("assistant",)


def shipped_decoders(codec_folder: str | Path) -> list[str]:
    """Names of the trained decoders in a codec folder (``seanet`` not included)."""
    root = Path(codec_folder) / DECODERS_DIR
    return sorted(p.name for p in root.glob("*") if (p / "model.safetensors").is_file()
                  and (p / "config.json").is_file()) if root.is_dir() else []


def resolve_decoder(codec_folder: str | Path | None, name: str) -> str:
    """``answers`` and ``auto`` -> a shipped decoder or ``seanet``; other names are checked."""
    shipped = shipped_decoders(codec_folder) if codec_folder is not None else []
    if name == "answers":
        name = next((n for n in ANSWER_DECODERS if n in shipped), "auto")
    if name == "auto":
        return next((n for n in AUTO_DECODERS if n in shipped), SEANET)
    if name != SEANET and name not in shipped and not Path(name).is_dir():
        raise VoxloopError(f"no decoder {name!r} for codec {codec_folder}: it ships "
                           f"{[SEANET, *shipped]} (or give a decoder folder)")
    return name


def decoder_folder(codec_folder: str | Path | None, name: str) -> Path:
    """A decoder folder: a shipped name inside the codec folder, or a path."""
    if codec_folder is not None and (Path(codec_folder) / DECODERS_DIR / name).is_dir():
        return Path(codec_folder) / DECODERS_DIR / name
    return Path(name)


def save_frame_decoder(decoder: FrameDecoder, folder: str | Path,
                       card: str | None = None) -> Path:
    """config.json and float16 model.safetensors (atomically) into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().to(torch.float16).contiguous()
             for k, v in decoder.state_dict().items()}
    atomic_write(folder / "model.safetensors", lambda tmp: save_file(
        state, str(tmp), metadata={"format": "pt", "kind": DECODER_KIND}))
    (folder / "config.json").write_text(json.dumps(decoder.config.to_json(), indent=2) + "\n")
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


def load_frame_decoder(folder: str | Path) -> FrameDecoder:
    """A decoder folder written by ``save_frame_decoder``, float32, in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path, weights_path = folder / "config.json", folder / "model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise VoxloopError(f"{folder} is not a decoder folder: it needs config.json and "
                           "model.safetensors (train one with `voxloop codec train-decoder`)")
    config = FrameDecoderConfig.from_json(json.loads(config_path.read_text()))
    if config.kind != DECODER_KIND:
        raise VoxloopError(f"{folder} holds a {config.kind}, not a {DECODER_KIND}")
    decoder = FrameDecoder(config)
    decoder.load_state_dict({k: v.float() for k, v in load_file(str(weights_path)).items()})
    return decoder.eval().requires_grad_(False)
