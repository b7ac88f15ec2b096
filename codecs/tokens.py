"""Codec tokens on disk (npz): what ``voxloop codec encode`` / ``decode`` read and write.

The npz holds ``codes [K, F]`` (int16; K may be fewer than the codec's: ``--codebooks``),
the codec's name, sample rate,
frame rate and cardinality, and ``num_samples`` (the input length, so decoding
trims the padding of the last frame).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from voxloop.audio import read_wav, resample, write_wav
from voxloop.codecs.registry import codec_sha256, load_codec
from voxloop.errors import VoxloopError
from voxloop.training import NPZ_MAGIC

_AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM")  # wav, flac, ogg, mp3, aiff


def written_npz(path: str | Path) -> Path:
    """Where ``np.savez`` writes ``path``: it adds ``.npz`` when the name lacks it."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def encode_file(wav_path: str | Path, npz_path: str | Path, codec_name: str,
                codebooks: int = 0) -> str:
    """Encode a wav into ``codes [K, F]``; ``codebooks`` > 0 keeps only the first K."""
    codec = load_codec(codec_name, decoder="seanet")  # encoding never needs a decoder
    if not 0 <= codebooks <= codec.num_codebooks:
        raise VoxloopError(f"--codebooks {codebooks}: codec {codec.name} has 1 to "
                           f"{codec.num_codebooks}")
    samples, rate_hz = read_wav(wav_path)
    check_heard(samples, wav_path)
    samples = resample(samples, rate_hz, codec.sample_rate)
    codes = codec.encode(torch.from_numpy(samples).view(1, 1, -1))[0, :codebooks or None]
    Path(npz_path).parent.mkdir(parents=True, exist_ok=True)
    dtype = np.int16 if codec.cardinality <= 1 << 15 else np.int32
    np.savez(npz_path, codes=codes.numpy().astype(dtype), codec=codec.config.kind,
             codec_name=codec.name, codec_sha256=codec_sha256(codec.name) or "",
             sample_rate_hz=codec.sample_rate,
             frame_rate_hz=codec.frame_rate, cardinality=codec.cardinality,
             num_samples=len(samples))
    kbps = codec.bitrate_bps_of(codes.shape[0]) / 1000
    return (f"{codes.shape[1]} frames x {codes.shape[0]} codebooks at {codec.frame_rate:g} Hz "
            f"({kbps:.1f} kbps, codec {codec.name})")


def decode_file(npz_path: str | Path, wav_path: str | Path, codec_name: str,
                decoder: str = "auto") -> float:
    """Decode an npz of codes with ``decoder`` (``load_codec``'s names); returns seconds."""
    _check_codes_file(Path(npz_path))
    codec = load_codec(codec_name, decoder=decoder)
    try:
        data = np.load(npz_path)
        codes, num_samples = data["codes"].astype(np.int64), int(data["num_samples"])
        rate_hz, cardinality = int(data["sample_rate_hz"]), int(data["cardinality"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise VoxloopError(f"{npz_path} is not a voxloop codes file: {exc}") from exc
    frame_rate_hz = float(data["frame_rate_hz"]) if "frame_rate_hz" in data else \
        codec.frame_rate
    if rate_hz != codec.sample_rate or cardinality != codec.cardinality or \
            codes.shape[0] > codec.num_codebooks or codes.max(initial=0) >= codec.cardinality \
            or abs(frame_rate_hz - codec.frame_rate) > 1e-6:
        raise VoxloopError(f"{npz_path} was made by codec {data['codec_name']} "
                           f"({rate_hz} Hz, {frame_rate_hz:g} frames/s, {codes.shape[0]} x "
                           f"{cardinality} codes); decode it "
                           f"with the same --codec (this one is {codec.name})")
    made_by = str(data["codec_sha256"]) if "codec_sha256" in data else ""
    weights = codec_sha256(codec.name)
    if made_by and weights and made_by != weights:  # same shapes, other weights: noise
        raise VoxloopError(f"{npz_path} was made by codec {data['codec_name']} (weights "
                           f"{made_by[:12]}), not by {codec.name} ({weights[:12]}): decode "
                           "it with the --codec that encoded it")
    wav = codec.decode(torch.from_numpy(codes).unsqueeze(0))[0, 0, :num_samples]
    write_wav(wav_path, wav.numpy(), codec.sample_rate)
    return num_samples / codec.sample_rate


def check_heard(samples: np.ndarray, wav_path: str | Path) -> None:
    """A clear error for a wav with no samples: there is nothing to encode."""
    if not len(samples):
        raise VoxloopError(f"{wav_path} holds no audio (0 samples): nothing to encode")


def _check_codes_file(path: Path) -> None:
    """One-line errors for the usual mix-ups, before the codec loads."""
    encode = "make one with `voxloop codec encode AUDIO.wav CODES.npz`"
    if not path.is_file():
        raise VoxloopError(f"codes file not found: {path} ({encode})")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_AUDIO_MAGIC):
        raise VoxloopError(f"{path} is audio, not codes: decode reads the .npz that "
                           f"`voxloop codec encode` writes (voxloop codec encode {path} "
                           f"{path.with_suffix('.npz')})")
    if magic != NPZ_MAGIC:
        raise VoxloopError(f"{path} is not a voxloop codes file (not an .npz archive): "
                           f"{encode}")
