"""Whisper's audio encoder as a frozen torch module, read from a CTranslate2 ``model.bin``.

The ASR teacher's own weights (the pinned tiny.en from ``voxloop.models``) become the
ears of the semantic tokenizer. Three parts:

- ``read_ctranslate2(path)``: the named arrays of a CTranslate2 model file (its binary
  format is parsed here with ``struct``; no ctranslate2 import).
- ``whisper_log_mel(wav)``: Whisper's front end (80 slaney mels, n_fft 400, hop 160 at
  16 kHz, log10, a floor 8 below the utterance's peak, ``(x + 4) / 4``) on unpadded audio.
- ``WhisperEncoder``: two conv1d + GELU, sinusoidal positions sliced to the input length
  (no padding to 30 s), pre-LN transformer layers, a final LayerNorm. Each layer can
  also attend to the keys/values of earlier blocks (``EncoderLayer.forward``'s ``past``),
  which the block-causal streaming encoder (``semantic_stream``) relies on.
"""

from __future__ import annotations

import math
import mmap
import re
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voxloop.audio import MODEL_RATE_HZ
from voxloop.errors import VoxloopError
from voxloop.models import bundled_whisper_folder

N_FFT = 400
HOP_SAMPLES = 160  # 10 ms mel frames at 16 kHz; the encoder's output is 50 Hz
N_MELS = 80
LOG_FLOOR_RANGE = 8.0  # log10 units kept below the peak (80 dB of power)
CT2_BINARY_VERSIONS = (5, 6)
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bf16"}


# --- CTranslate2 model.bin -------------------------------------------------------------

def read_ctranslate2(path: str | Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """``(spec name, {name: array})`` of the variables in a CTranslate2 ``model.bin``
    whose names start with ``prefix`` (bfloat16 comes back as float32).

    Layout (little endian): u32 binary version, spec name, u32 revision, u32 count, then
    per variable: name, u8 rank, rank x u32 dims, u8 dtype id, u32 byte size, the bytes;
    then u32 count of aliases, each two names. A name is u16 length (with its NUL), bytes, NUL.
    """
    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        reader = _Reader(data)
        try:
            version = reader.unpack("I")
            if version not in CT2_BINARY_VERSIONS:
                raise VoxloopError(f"{path}: CTranslate2 binary version {version}, expected one "
                                   f"of {CT2_BINARY_VERSIONS}")
            spec, _revision = reader.string(), reader.unpack("I")
            variables = {}
            for _ in range(reader.unpack("I")):
                name = reader.string()
                dims = [reader.unpack("I") for _ in range(reader.unpack("B"))]
                dtype, num_bytes = _CT2_DTYPES[reader.unpack("B")], reader.unpack("I")
                start = reader.skip(num_bytes)
                if name.startswith(prefix):
                    variables[name] = _array(data, start, num_bytes, dtype, dims)
            for _ in range(reader.unpack("I")):  # aliases: both names must be strings
                reader.string(), reader.string()
        except (struct.error, KeyError, UnicodeDecodeError) as exc:
            raise VoxloopError(f"{path} is not a CTranslate2 model file: {exc!r}") from exc
        if reader.offset != len(data):
            raise VoxloopError(f"{path}: {len(data) - reader.offset} bytes after the last alias")
    return spec, variables


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.offset = data, 0

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.unpack("H")
        raw = self.data[self.offset:self.offset + size]
        if len(raw) != size or raw[-1:] != b"\0":
            raise struct.error("bad string")
        self.offset += size
        return raw[:-1].decode("utf-8")

    def skip(self, num_bytes: int) -> int:
        start = self.offset
        if start + num_bytes > len(self.data):
            raise struct.error("truncated variable")
        self.offset += num_bytes
        return start


def _array(data: mmap.mmap, start: int, num_bytes: int, dtype, dims: list[int]) -> np.ndarray:
    raw = data[start:start + num_bytes]
    if dtype == "bf16":  # the upper half of a float32
        return (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32) \
            .reshape(dims).copy()
    array = np.frombuffer(raw, dtype).reshape(dims)
    return array.copy()


# --- log-mel front end -----------------------------------------------------------------

def mel_filters(rate_hz: int = MODEL_RATE_HZ, n_fft: int = N_FFT,
                n_mels: int = N_MELS) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` slaney mel filterbank, as ``librosa.filters.mel``
    (htk=False, norm="slaney"), which made Whisper's ``mel_filters.npz``."""
    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        mel = hz / (200.0 / 3)
        log_region = hz >= 1000.0
        return np.where(log_region, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0)
                        / (np.log(6.4) / 27.0), mel)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)),
                        mel * (200.0 / 3))

    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / rate_hz)
    band_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(np.array(rate_hz / 2.0)), n_mels + 2))
    ramps = band_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / np.diff(band_hz)[:-1, None]
    upper = ramps[2:] / np.diff(band_hz)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (band_hz[2:] - band_hz[:-2]))[:, None]  # slaney: equal area
    return weights.astype(np.float32)


def log_mel_power(frames: Tensor, filters: Tensor) -> Tensor:
    """Unwindowed frames ``[B, n, N_FFT]`` -> log10 mel power ``[B, 80, n]`` (floored
    at 1e-10); the hann window and the power spectrum are applied here."""
    window = torch.hann_window(N_FFT, dtype=frames.dtype, device=frames.device)
    power = torch.fft.rfft(frames * window).abs().square()  # [B, n, 201]
    return torch.clamp(power @ filters.T, min=1e-10).log10().transpose(1, 2)


def whisper_log_mel(wav: Tensor, filters: Tensor | None = None) -> Tensor:
    """Whisper's log-mel of unpadded 16 kHz audio ``[B, T]`` -> ``[B, 80, T // 160]``.

    Centered frames (reflect padding), the last STFT frame dropped, floored at 8 below
    each row's peak, then ``(x + 4) / 4`` (openai-whisper's ``log_mel_spectrogram``
    without its 30 s of padding; faster-whisper's ``FeatureExtractor(padding=0)``).
    """
    if filters is None:
        filters = torch.from_numpy(mel_filters())
    padded = F.pad(wav[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[:, 0]
    frames = padded.unfold(-1, N_FFT, HOP_SAMPLES)[:, :-1]  # [B, T // 160, 400]
    log_mel = log_mel_power(frames, filters.to(wav))
    peak = log_mel.amax(dim=(1, 2), keepdim=True)
    return (torch.maximum(log_mel, peak - LOG_FLOOR_RANGE) + 4.0) / 4.0


# --- the encoder -----------------------------------------------------------------------

class EncoderLayer(nn.Module):
    """Pre-LN self-attention (one fused qkv projection) and a GELU MLP."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_ln, self.mlp_ln = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None,
                mask: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x [B, n, D]`` attends to ``past`` keys/values ``[B, H, L, D/H]`` and to itself
        (``mask [n, L + n]``, True = may attend; None = all); returns (``[B, n, D]``,
        keys/values ``[B, H, L + n, D/H]``)."""
        batch, n, width = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).view(batch, n, 3, self.num_heads, -1) \
            .permute(2, 0, 3, 1, 4)  # each [B, H, n, D/H]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, n, width))
        x = x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))
        return x, (k, v)


class WhisperEncoder(nn.Module):
    """Whisper's AudioEncoder: ``mel [B, 80, M]`` -> features ``[B, ceil(M / 2), D]`` (50 Hz)."""

    def __init__(self, num_layers: int = 4, num_heads: int = 6, width: int = 384,
                 max_frames: int = 1500) -> None:
        super().__init__()
        self.width, self.max_frames = width, max_frames
        self.conv1 = nn.Conv1d(N_MELS, width, 3, padding=1)
        self.conv2 = nn.Conv1d(width, width, 3, stride=2, padding=1)
        self.register_buffer("positions", _sinusoids(max_frames, width), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(width, num_heads) for _ in range(num_layers))
        self.ln_post = nn.LayerNorm(width)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> Tensor:
        """Full attention (or ``mask [E, E]``, True = may attend) over at most 30 s."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)  # [B, E, D]
        if x.shape[1] > self.max_frames:
            raise VoxloopError(f"Whisper's encoder hears at most {self.max_frames} frames "
                               f"(30 s); got {x.shape[1]}")
        x = x + self.positions[:x.shape[1]]
        for layer in self.layers:
            x, _ = layer(x, mask=mask)
        return self.ln_post(x)


def _sinusoids(length: int, channels: int) -> Tensor:
    """Whisper's position table ``[length, channels]`` (sin half, then cos half)."""
    increment = math.log(10000) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2))
    angles = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def load_whisper_encoder(folder: str | Path | None = None) -> WhisperEncoder:
    """The frozen encoder of a CTranslate2 Whisper folder (default: the pinned tiny.en,
    its sha256 checked); float16 weights become float32."""
    folder = bundled_whisper_folder() if folder is None else Path(folder)
    if not (folder / "model.bin").is_file():
        raise VoxloopError(f"{folder} is not a CTranslate2 Whisper model folder (no model.bin)")
    spec, weights = read_ctranslate2(folder / "model.bin", prefix="encoder/")
    if spec != "WhisperSpec" or "encoder/conv1/weight" not in weights:
        raise VoxloopError(f"{folder}/model.bin holds a {spec}, not a Whisper model")
    num_layers = len({k.split("/")[1] for k in weights if re.match(r"encoder/layer_\d+/", k)})
    positions = weights["encoder/position_encodings/encodings"]
    encoder = WhisperEncoder(num_layers, int(weights["encoder/num_heads"]),
                             width=positions.shape[1], max_frames=positions.shape[0])
    encoder.load_state_dict(_torch_names(weights, num_layers))
    encoder.positions.copy_(torch.from_numpy(positions.astype(np.float32)))
    return encoder.eval().requires_grad_(False)


def _torch_names(weights: dict[str, np.ndarray], num_layers: int) -> dict[str, Tensor]:
    """CTranslate2 names -> this module's state dict (float32)."""
    names = {"conv1.weight": "conv1/weight", "conv1.bias": "conv1/bias",
             "conv2.weight": "conv2/weight", "conv2.bias": "conv2/bias",
             "ln_post.weight": "layer_norm/gamma", "ln_post.bias": "layer_norm/beta"}
    parts = {"attn_ln": "self_attention/layer_norm", "qkv": "self_attention/linear_0",
             "out": "self_attention/linear_1", "mlp_ln": "ffn/layer_norm",
             "fc1": "ffn/linear_0", "fc2": "ffn/linear_1"}
    for i in range(num_layers):
        for ours, theirs in parts.items():
            is_norm = ours.endswith("_ln")
            names[f"layers.{i}.{ours}.weight"] = f"layer_{i}/{theirs}/" + \
                ("gamma" if is_norm else "weight")
            names[f"layers.{i}.{ours}.bias"] = f"layer_{i}/{theirs}/" + \
                ("beta" if is_norm else "bias")
    return {ours: torch.from_numpy(weights["encoder/" + theirs].astype(np.float32))
            for ours, theirs in names.items()}
