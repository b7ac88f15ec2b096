"""Tiny semantic tokenizers, semantic packs and semantic students for the student and
engine tests (codebooks initialized at random: untrained, but every code in use)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from tests.distill.student.fixtures import tiny_config, tiny_examples
from voxloop.audio import MODEL_RATE_HZ, to_pcm16
from voxloop.codecs.semantic import (
    SemanticConfig,
    SemanticTokenizer,
    new_tokenizer,
    pad_to_pool,
)
from voxloop.codecs.whisper_encoder import WhisperEncoder
from voxloop.distill.data.dataset import shard_name, shard_path, write_manifest, write_shard
from voxloop.distill.student.model import Student, save_student
from voxloop.distill.student.pack import PackedData, pack_examples
from voxloop.distill.student.user_tokens import semantic_info, with_semantic_tokens
from voxloop.distill.student.vocab import Tokenizer, build_vocab

# small bottleneck, 0.2 s blocks: tokens come out while a short clip streams
SMALL = dict(block_ms=200, hidden_dim=32, code_dim=8, codebook_size=64, head_dim=16)
CODEC = {"name": "voxloop-codec-16k", "sha256": None}  # the answers' codec (bundled)


def init_codebook(tokenizer: SemanticTokenizer, seed: int = 0) -> SemanticTokenizer:
    """Codes seeded from the frames of a few noisy clips (an untrained tokenizer's codebook
    is empty until k-means runs), so that many codes are in use."""
    g = torch.Generator().manual_seed(seed)
    bottleneck = tokenizer.bottleneck
    with torch.no_grad():
        wav = torch.from_numpy(np.stack([noise_speech(2 * MODEL_RATE_HZ, seed + i)
                                         for i in range(6)]))
        features = pad_to_pool(tokenizer.features(wav), tokenizer.config.pool_frames)
        frames = torch.unique(bottleneck.pooled(features).flatten(0, 1), dim=0)  # silence:
        frames = frames + 0.05 * frames.std() * torch.randn(frames.shape, generator=g)  # one
    if hasattr(bottleneck, "init_codebook"):
        bottleneck.init_codebook(frames, iters=5, generator=g)
    else:
        book = bottleneck.vq._codebook
        pick = torch.randint(len(frames), (tokenizer.cardinality,), generator=g)
        book.embed.copy_(frames[pick] + 0.01 * torch.randn(book.embed.shape, generator=g))
        book.inited.fill_(1)
    return tokenizer


def tiny_tokenizer(frame_rate_hz: float = 25.0, seed: int = 0) -> SemanticTokenizer:
    """A random 2-layer, 32-wide encoder (30 s segments, as Whisper's) and a small
    bottleneck: fast."""
    torch.manual_seed(seed)
    encoder = WhisperEncoder(num_layers=2, num_heads=2, width=32).eval().requires_grad_(False)
    config = SemanticConfig(frame_rate_hz=frame_rate_hz, **SMALL)
    return init_codebook(new_tokenizer(config, encoder, name="tiny-semantic"), seed)


def real_tokenizer(seed: int = 0) -> SemanticTokenizer:
    """Whisper tiny.en's real encoder with an untrained small bottleneck (random codes)."""
    torch.manual_seed(seed)
    config = SemanticConfig(block_ms=1000, hidden_dim=32, code_dim=8, codebook_size=64,
                            head_dim=16)
    return init_codebook(new_tokenizer(config, name="real-semantic"), seed)


def noise_speech(num_samples: int, seed: int) -> np.ndarray:
    """float32 ``[T]``: digital silence, then tones and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / MODEL_RATE_HZ
    signal = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) * np.sin(2 * np.pi * 3 * t)
    signal = signal + 0.05 * rng.standard_normal(num_samples)
    signal[: num_samples // 5] = 0.0
    return signal.astype(np.float32)


def examples_with_audio(n: int = 4, seed: int = 0, split: str = "train") -> list:
    """``tiny_examples`` with 0.4-1.2 s of user audio each (int16 at 16 kHz)."""
    rng = np.random.default_rng(seed)
    return [dataclasses.replace(e, user_audio=to_pcm16(noise_speech(
        int(rng.integers(6400, 19200)), seed + i)), answer_audio=np.zeros(160, np.int16))
        for i, e in enumerate(tiny_examples(n, seed, split))]


def semantic_packed(tokenizer: SemanticTokenizer, examples: list) -> PackedData:
    """What ``pack_dataset(..., user_input="semantic")`` makes of ``examples``."""
    heard = list(with_semantic_tokens(examples, tokenizer, batch_size=3))
    vocab = build_vocab([e.answer_text for e in heard], [e.asr_text for e in heard],
                        with_domain=False)
    info = semantic_info(tokenizer, None)
    arrays = pack_examples(heard, Tokenizer(vocab), np.array([info["silence"]]))
    arrays["user_codebooks"] = tokenizer.codebook_vectors().numpy()
    return PackedData(arrays, {**vocab, "codec": CODEC, "user_input": "semantic",
                               "semantic": info})


def semantic_student(tokenizer: SemanticTokenizer, vocab: dict, seed: int = 0,
                     **changes) -> Student:
    """A random semantic student hearing ``tokenizer`` (its codebook as input vectors)."""
    torch.manual_seed(seed)
    books = tokenizer.codebook_vectors()
    config = tiny_config(text_vocab=len(vocab["text"]), ctc_vocab=len(vocab["ctc"]), k_out=4,
                         user_input="semantic", user_vocab=books.shape[0],
                         user_latent_dim=books.shape[1],
                         user_frame_rate_hz=tokenizer.frame_rate_hz, **changes)
    model = Student(config)
    model.set_user_codebooks(books)
    return model.eval()


def save_semantic_student(tokenizer: SemanticTokenizer, tokenizer_folder: Path,
                          folder: Path, seed: int = 0) -> Path:
    """A random semantic student saved as a model folder whose vocab names the tokenizer
    saved at ``tokenizer_folder`` (and the bundled codec for its answers)."""
    vocab = build_vocab(["Seven plus five is twelve.", "Hello there."], ["what is 7 plus 5"],
                        with_domain=False)
    vocab = {**vocab, "codec": CODEC, "user_input": "semantic",
             "semantic": semantic_info(tokenizer, tokenizer_folder)}
    model = semantic_student(tokenizer, vocab, seed, max_len=640)
    return save_student(model, vocab, folder)


def write_dataset(folder, existing: dict[str, list], planned: dict[str, int]) -> None:
    """A dataset folder whose manifest plans ``planned[split]`` shards of which only the
    ones in ``existing`` exist (a build still running)."""
    splits = {}
    for split, count in planned.items():
        shards = {shard_name(split, i): 2 for i in range(count)}
        splits[split] = {"examples": 2 * count, "shards": shards}
    for split, examples in existing.items():
        for i in range(0, len(examples), 2):
            write_shard(shard_path(folder, shard_name(split, i // 2)), examples[i:i + 2],
                        {"name": "voxloop-codec-16k", "sha256": "x"})
    write_manifest(folder, {"codec": {"name": "voxloop-codec-16k", "sha256": "x"},
                            "frame_rate_hz": 25.0, "num_codebooks": 8,
                            "audio_rate_hz": 16000, "splits": splits})
