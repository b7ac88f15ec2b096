"""The semantic tokenizer: block-causal streaming (chunks == one pass, tokens never change),
its deviation from Whisper's full attention, CTC training, save/load."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voxloop.audio import MODEL_RATE_HZ, resample
from voxloop.codecs.semantic import (
    SemanticConfig,
    SemanticTokenizer,
    load_semantic,
    new_tokenizer,
    save_semantic,
)
from voxloop.codecs.semantic_stream import BlockEncoder, block_causal_mask, causal_log_mel
from voxloop.codecs.semantic_train import SemanticTrainSettings, text_to_ids, train
from voxloop.codecs.whisper_encoder import WhisperEncoder, load_whisper_encoder, whisper_log_mel
from voxloop.errors import VoxloopError

TEXTS = ("How many legs does a spider have?", "What is the capital of France?",
         "Set a timer for ten minutes.", "Is it going to rain tomorrow?",
         "Tell me a short joke about cats.", "How far away is the moon?")
SMALL = SemanticConfig(block_ms=200, hidden_dim=32, code_dim=8, codebook_size=64, head_dim=16,
                       lookup_dim=4)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_tokenizer(config: SemanticConfig = SMALL) -> SemanticTokenizer:
    """Random weights, 1 s segments (50 frames): fast, and segments restart within 3 s."""
    torch.manual_seed(0)
    encoder = WhisperEncoder(num_layers=2, num_heads=2, width=32, max_frames=50).eval()
    return random_codebook(new_tokenizer(config, encoder.requires_grad_(False)))


def random_codebook(tokenizer: SemanticTokenizer) -> SemanticTokenizer:
    """Seed the untrained codebook with random codes (either quantizer)."""
    frames = torch.randn(4 * tokenizer.cardinality, tokenizer.config.code_dim)
    tokenizer.bottleneck.init_codebook(frames, iters=0)
    return tokenizer


def noise_speech(num_samples: int, seed: int) -> torch.Tensor:
    """Silence, then bursts of tones and noise: ``[T]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / MODEL_RATE_HZ
    signal = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) * np.sin(2 * np.pi * 3 * t)
    signal = signal + 0.05 * rng.standard_normal(num_samples)
    signal[: num_samples // 5] = 0.0  # digital silence first, as a TTS clip starts
    return torch.from_numpy(signal.astype(np.float32))


def stream(tokenizer: SemanticTokenizer, wav: torch.Tensor, sizes: list[int],
           output: str = "tokens") -> torch.Tensor:
    state, out, start = tokenizer.init_state(wav.shape[0]), [], 0
    while start < wav.shape[1]:
        size = sizes[len(out) % len(sizes)]
        out.append(tokenizer.step(state, wav[:, start:start + size], output))
        start += size
    return torch.cat([*out, tokenizer.flush(state, output)], dim=1)


def expected_tokens(num_samples: int, pool_frames: int) -> int:
    frames = (num_samples // 160 + 1) // 2
    return -(-frames // pool_frames)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_samples=st.integers(0, 3 * MODEL_RATE_HZ), seed=st.integers(0, 5),
       sizes=st.lists(st.integers(1, 9000), min_size=1, max_size=6),
       rate=st.sampled_from([25.0, 12.5]))
def test_chunks_equal_one_pass(num_samples, seed, sizes, rate):
    tokenizer = small_tokenizer(SemanticConfig(**{**SMALL.to_json(), "frame_rate_hz": rate}))
    wav = torch.stack([noise_speech(num_samples, seed), noise_speech(num_samples, seed + 9)])
    whole = tokenizer.encode(wav)
    assert whole.shape == (2, expected_tokens(num_samples, tokenizer.config.pool_frames))
    assert torch.equal(stream(tokenizer, wav, sizes), whole)
    for row in range(2):  # many streams in one batch: each row as if alone
        assert torch.equal(tokenizer.encode(wav[row:row + 1]), whole[row:row + 1])
    blocks = tokenizer.blocks
    state, pieces, start = blocks.init_state(2), [], 0
    for size in sizes * (num_samples // min(sizes) + 1):
        if start >= num_samples:
            break
        pieces.append(blocks.step(state, wav[:, start:start + size]))
        start += size
    assert torch.equal(torch.cat([*pieces, blocks.flush(state)], dim=1), tokenizer.features(wav))


@settings(max_examples=10, deadline=None)
@given(num_samples=st.integers(400, 3 * MODEL_RATE_HZ), seed=st.integers(0, 5))
def test_stream_equals_a_full_pass_with_the_block_causal_mask(num_samples, seed):
    tokenizer = small_tokenizer()
    encoder, wav = tokenizer.blocks.encoder, noise_speech(num_samples, seed)[None]
    with torch.no_grad():
        mel = causal_log_mel(wav)
        x = torch.nn.functional.gelu(encoder.conv2(torch.nn.functional.gelu(
            encoder.conv1(mel)))).transpose(1, 2)
        segments = []
        for start in range(0, x.shape[1], encoder.max_frames):  # 30 s segments (here 1 s)
            part = x[:, start:start + encoder.max_frames]
            part = part + encoder.positions[:part.shape[1]]
            mask = block_causal_mask(part.shape[1], tokenizer.config.block_frames)
            for layer in encoder.layers:
                part, _ = layer(part, mask=mask)
            segments.append(encoder.ln_post(part))
    full = torch.cat(segments, dim=1)
    torch.testing.assert_close(tokenizer.features(wav), full, atol=1e-4, rtol=1e-4)


def test_pooled_vectors_and_frames_stream_and_quantize_to_the_tokens():
    """What the end-of-turn model may hear instead of the tokens: the vectors before the VQ,
    or the encoder frames each token pools, streamed chunk by chunk as the tokens are; the
    frames pool into those vectors, which quantize into exactly those tokens."""
    tokenizer = small_tokenizer()
    wav = torch.stack([noise_speech(2 * MODEL_RATE_HZ, 4), noise_speech(2 * MODEL_RATE_HZ, 5)])
    pooled = tokenizer.encode(wav, output="pooled")
    frames = expected_tokens(wav.shape[1], tokenizer.config.pool_frames)
    assert pooled.shape == (2, frames, tokenizer.config.code_dim)
    assert torch.equal(stream(tokenizer, wav, [700, 3100], output="pooled"), pooled)
    groups = stream(tokenizer, wav, [700, 3100], output="frames")
    assert groups.shape == (2, frames, tokenizer.config.pool_frames,
                            tokenizer.blocks.encoder.width)
    torch.testing.assert_close(groups.flatten(1, 2)[:, :tokenizer.features(wav).shape[1]],
                               tokenizer.features(wav))
    torch.testing.assert_close(tokenizer.pool_groups(groups), pooled)
    tokens = tokenizer.quantize(pooled)
    assert torch.equal(tokens, tokenizer.encode(wav))
    assert len(tokens.unique()) > 1  # the rows are not one repeated code
    with pytest.raises(ValueError, match="output must be one of"):
        tokenizer.encode(wav, output="logits")


def test_tokens_once_out_never_change():
    """Whatever audio follows, the tokens a stream gave out stay the first tokens."""
    tokenizer = small_tokenizer()
    first = noise_speech(MODEL_RATE_HZ, 1)[None]
    state = tokenizer.init_state(1)
    early = torch.cat([tokenizer.step(state, first[:, i:i + 800])
                       for i in range(0, first.shape[1], 800)], dim=1)
    assert early.shape[1] >= 10  # out while "speaking": 0.2 s blocks, 25 Hz
    for seed in (2, 3):
        rest = noise_speech(MODEL_RATE_HZ, seed)[None] * (seed - 1)
        whole = tokenizer.encode(torch.cat([first, rest], dim=1))
        assert torch.equal(whole[:, :early.shape[1]], early)


def test_flushed_stream_refuses_more_audio():
    tokenizer = small_tokenizer()
    state = tokenizer.init_state(1)
    tokenizer.flush(state)
    with pytest.raises(ValueError, match="flushed"):
        tokenizer.step(state, torch.zeros(1, 100))


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    from voxloop.distill.teachers.tts import synthesize

    clips = []
    for i, text in enumerate(TEXTS):
        samples, rate_hz = synthesize(text, ("espeak:en-us", "flite:slt")[i % 2])
        clips.append(resample(samples, rate_hz, MODEL_RATE_HZ))
    return clips


@pytest.fixture(scope="module")
def whisper() -> WhisperEncoder:
    return load_whisper_encoder()


def test_block_causal_deviation_from_full_attention(speech, whisper):
    """Prints how far block-causal features are from Whisper's (cosine per frame)."""
    wav = torch.from_numpy(np.concatenate(speech[:2]))[None]
    with torch.no_grad():
        full = whisper(whisper_log_mel(wav))
    for block_frames in (25, 50):
        blocks = BlockEncoder(whisper, block_frames)
        state = blocks.init_state(1)
        start = time.perf_counter()
        ours = torch.cat([blocks.step(state, wav), blocks.flush(state)], dim=1)
        elapsed_ms = 1000 * (time.perf_counter() - start)
        cosine = torch.nn.functional.cosine_similarity(ours, full, dim=-1)[0]
        print(f"\nblocks of {block_frames * 20} ms vs full attention on "
              f"{wav.shape[1] / MODEL_RATE_HZ:.1f} s: cosine mean {cosine.mean():.3f}, "
              f"10th percentile {cosine.quantile(0.1):.3f}, min {cosine.min():.3f} "
              f"({elapsed_ms:.0f} ms)")
        assert cosine.mean() > 0.8


def test_real_speech_tokens_stream_while_speaking(speech, whisper):
    tokenizer = random_codebook(new_tokenizer(SemanticConfig(block_ms=500), whisper))
    wav = torch.from_numpy(speech[0])[None]
    state, times, tokens = tokenizer.init_state(1), [], []
    for start in range(0, wav.shape[1], 1600):  # 100 ms chunks, as a microphone sends
        begin = time.perf_counter()
        tokens.append(tokenizer.step(state, wav[:, start:start + 1600]))
        times.append(time.perf_counter() - begin)
    tokens.append(tokenizer.flush(state))
    out = torch.cat(tokens, dim=1)
    assert torch.equal(out, tokenizer.encode(wav))
    half = len(tokens) // 2
    assert torch.cat(tokens[:half], dim=1).shape[1] >= 10  # out before the end
    print(f"\n100 ms chunks: worst step {1000 * max(times):.1f} ms (a 0.5 s block), "
          f"{out.shape[1]} tokens for {wav.shape[1] / MODEL_RATE_HZ:.2f} s")


def test_training_lowers_ctc_and_the_model_round_trips(tmp_path, speech, whisper):
    examples = list(zip(speech, TEXTS, strict=True))
    config = SemanticConfig(block_ms=500, hidden_dim=64, code_dim=16, codebook_size=32,
                            head_dim=64)
    run = SemanticTrainSettings(out=str(tmp_path / "run"), steps=80, batch_size=6, lr=1e-2,
                                warmup_steps=5, ckpt_every=40, eval_every=20, vq_start_step=10)
    metrics = train(examples, examples[:3], config, run, encoder=whisper, progress=False)
    history = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["history"]
    assert [h["step"] for h in history] == [20, 40, 60, 80]
    assert history[-1]["val_ctc"] < 0.9 * history[0]["val_ctc"], history

    resumed = train(examples, examples[:3], config, dataclasses.replace(run, steps=90),
                    encoder=whisper, progress=False)  # picks up at step 80, features cached
    assert resumed["step"] == 90
    assert [h["step"] for h in torch.load(tmp_path / "run" / "checkpoint.pt",
                                          weights_only=True)["history"]] == [20, 40, 60, 80, 90]

    folder = tmp_path / "run" / "model"
    assert json.loads((folder / "config.json").read_text())["codebook_size"] == 32
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    assert all(v.dtype in (torch.float16, torch.int64) or not v.is_floating_point()
               for v in weights.values())
    assert not any("conv1" in k or "layers" in k for k in weights)  # no Whisper weights
    assert (folder / "model.safetensors").stat().st_size < 1_000_000
    loaded = load_semantic(folder, whisper)
    tokens = loaded.encode(torch.from_numpy(speech[0])[None])
    assert tokens.shape[1] == expected_tokens(len(speech[0]), 2)
    assert loaded.codebook_vectors().shape == (32, 16)
    again = save_semantic(loaded.bottleneck, tmp_path / "again")
    assert load_file(str(again / "model.safetensors")).keys() == weights.keys()
    assert metrics["codes_used"] >= 2
    assert text_to_ids("Hi, Bob!") == [9, 10, 1, 3, 16, 3]


def test_wrong_folders_are_clear_errors(tmp_path):
    with pytest.raises(VoxloopError, match="not a semantic tokenizer folder"):
        load_semantic(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "seanet-rvq"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(VoxloopError, match="not a semantic tokenizer"):
        load_semantic(tmp_path)


def test_config_refuses_rates_and_blocks_it_cannot_pool():
    with pytest.raises(ValueError, match="25 or 12.5"):
        SemanticConfig(frame_rate_hz=20.0)
    for block_ms in (700, 0, -20):
        with pytest.raises(ValueError, match="block_ms"):
            SemanticConfig(block_ms=block_ms)


def test_cli_writes_tokens_and_refuses_wrong_inputs(tmp_path, speech, whisper, capsys):
    from voxloop.audio import write_wav
    from voxloop.cli import main
    from voxloop.models import DEFAULT_CODEC, models_dir

    tokenizer = random_codebook(new_tokenizer(SemanticConfig(frame_rate_hz=12.5), whisper))
    folder = save_semantic(tokenizer.bottleneck, tmp_path / "semantic")
    wav = write_wav(tmp_path / "q.wav", speech[0], MODEL_RATE_HZ)
    assert main(["codec", "semantic", str(wav), str(tmp_path / "q.npz"),
                 "--model", str(folder)]) == 0
    data = np.load(tmp_path / "q.npz")
    assert float(data["frame_rate_hz"]) == 12.5
    assert len(data["tokens"]) == expected_tokens(len(speech[0]), 4)
    assert main(["codec", "semantic", str(tmp_path / "missing.wav"), str(tmp_path / "x.npz"),
                 "--model", str(folder)]) == 1
    assert "audio file not found" in capsys.readouterr().err
    if (models_dir() / DEFAULT_CODEC).is_dir():  # a codec folder is not a tokenizer
        assert main(["codec", "semantic", str(wav), str(tmp_path / "x.npz"),
                     "--model", DEFAULT_CODEC]) == 1
        assert f"no semantic tokenizer at '{DEFAULT_CODEC}'" in capsys.readouterr().err
    write_wav(tmp_path / "click.wav", speech[0][:100], MODEL_RATE_HZ)  # 6 ms: under a token
    assert main(["codec", "semantic", str(tmp_path / "click.wav"), str(tmp_path / "y.npz"),
                 "--model", str(folder)]) == 1
    assert "less than one" in capsys.readouterr().err and not (tmp_path / "y.npz").exists()
    assert main(["codec", "semantic", str(wav), str(tmp_path / "x.npz"),
                 "--model", str(tmp_path / "nowhere")]) == 1
    assert "no semantic tokenizer at" in capsys.readouterr().err
