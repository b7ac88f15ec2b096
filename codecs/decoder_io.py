"""Frame-rate decoders on disk, and which one a codec decodes with.

A codec folder may hold trained decoders for its frozen codes:
``CODEC/decoders/NAME/{config.json, model.safetensors, README.md}`` (float16 weights).
``seanet`` always names the codec's own decoder. Two names choose by what is shipped:
``auto`` (any voice: ``general``, else ``seanet``) and ``answers`` (the assistant's voice:
``assistant``, else ``auto``).
"""

from __future__ import annotations

from pathlib import Path

from voxloop.codecs.decoder_config import DECODER_KIND, DECODERS_DIR, SEANET, FrameDecoderConfig
from voxloop.codecs.frame_decoder import FrameDecoder
from voxloop.errors import VoxloopError
from voxloop.models import load_model_folder, save_model_folder

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
    return save_model_folder(folder, decoder.state_dict(), decoder.config.to_json(), card)


def load_frame_decoder(folder: str | Path) -> FrameDecoder:
    """A decoder folder written by ``save_frame_decoder``, float32, in eval mode."""
    data, weights = load_model_folder(folder, "a decoder", "voxloop codec train-decoder",
                                      kind=DECODER_KIND)
    decoder = FrameDecoder(FrameDecoderConfig.from_json(data))
    decoder.load_state_dict(weights)
    return decoder.eval().requires_grad_(False)
