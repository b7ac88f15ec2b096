"""Train the semantic tokenizer's pooler + codebook with CTC on characters.

The Whisper encoder is frozen, so its block-causal features are computed once per clip and
cached in the run folder (``features-train.pt``, ``features-val.pt``; float16, reused while
the clips and the encoder settings stay the same). Each step pools a batch of cached
features, quantizes them (straight-through, dead-code restarts, commitment loss) and
scores a small CTC head over characters (vocabulary-free: any English text). The first
``vq_start_step`` steps train the pooler unquantized; then k-means on up to
``kmeans_frames`` pooled frames of the training set seeds the codebook, so every code starts
where frames are (a codebook seeded on one batch of fewer frames than codes leaves most
codes unused). The caller gives the clips and the split (``(wav path or 16 kHz samples,
text)`` pairs; the held-out voices are chosen in distill, which builds the data).

Every ``ckpt_every`` steps the run state (bottleneck, optimizer, step, history) is written
atomically to ``OUT/checkpoint.pt``; started again, training resumes from it with the same
batches (the batch order depends only on seed, step and the number of clips). ``max_minutes``
time-boxes one run (it checkpoints and exports where it stopped). At the end the tokenizer is
exported to ``OUT/model`` (config.json + float16 model.safetensors + card). ``fit`` is the
loop on features already computed (``voxloop distill semantic`` caches them per shard).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from voxloop.audio import MODEL_RATE_HZ, read_wav, resample
from voxloop.codecs.semantic import (
    CTC_VOCAB,
    SemanticBottleneck,
    SemanticConfig,
    SemanticTokenizer,
    new_tokenizer,
    pad_to_pool,
    save_semantic,
)
from voxloop.codecs.semantic_config import SemanticTrainSettings
from voxloop.codecs.semantic_stream import MIN_PEAK_LOG10
from voxloop.codecs.whisper_encoder import WhisperEncoder
from voxloop.errors import VoxloopError
from voxloop.training import cosine_lr, resume_checkpoint, torch_save_atomic

Example = tuple[str | Path | np.ndarray, str]  # a wav file or 16 kHz samples, its words
FEATURES_VERSION = 1  # bump when the encoder's features change meaning


def text_to_ids(text: str) -> list[int]:
    """Lowercase ASCII letters, apostrophes and single spaces -> CTC labels (blank is 0)."""
    plain = unicodedata.normalize("NFKD", text.lower()).encode("ascii", "ignore").decode()
    kept = "".join(c if c in CTC_VOCAB else " " for c in plain)
    return [CTC_VOCAB.index(c) + 1 for c in " ".join(kept.split())]


def ids_to_text(ids: Sequence[int]) -> str:
    return "".join(CTC_VOCAB[i - 1] for i in ids if i > 0)


def greedy_ctc(log_probs: Tensor, length: int) -> str:
    """Best path of one utterance ``[T, C]``: collapse repeats, drop blanks."""
    best = log_probs[:length].argmax(-1).tolist()
    return ids_to_text([c for i, c in enumerate(best) if i == 0 or c != best[i - 1]])


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


# --- feature cache ---------------------------------------------------------------------

def load_samples(audio: str | Path | np.ndarray) -> np.ndarray:
    if isinstance(audio, np.ndarray):
        return audio.astype(np.float32, copy=False)
    samples, rate_hz = read_wav(audio)
    return resample(samples, rate_hz, MODEL_RATE_HZ)


def features_key(config: SemanticConfig) -> list:
    """What the cached encoder features depend on besides the audio."""
    return [FEATURES_VERSION, config.whisper_sha256, config.block_ms, MIN_PEAK_LOG10]


def _fingerprint(examples: Sequence[Example], config: SemanticConfig) -> str:
    digest = hashlib.sha256(json.dumps(features_key(config)).encode())
    for audio, text in examples:
        if isinstance(audio, np.ndarray):
            digest.update(hashlib.sha256(np.ascontiguousarray(audio).tobytes()).digest())
        else:
            stat = Path(audio).stat()
            digest.update(f"{audio}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        digest.update(text.encode())
    return digest.hexdigest()


def cached_features(tokenizer: SemanticTokenizer, examples: Sequence[Example], path: Path,
                    progress: bool = True) -> list[Tensor]:
    """Block-causal encoder features ``[E, 384]`` (float16) per clip, cached at ``path``."""
    key = _fingerprint(examples, tokenizer.config)
    if path.is_file():
        cache = torch.load(path, weights_only=True)
        if cache.get("key") == key:
            return cache["features"]
    features = []
    for audio, _ in tqdm(examples, desc=f"features {path.stem}", disable=not progress):
        wav = torch.from_numpy(load_samples(audio))[None]
        features.append(tokenizer.features(wav)[0].to(torch.float16))
    torch_save_atomic(path, {"key": key, "features": features})
    return features


# --- one batch -------------------------------------------------------------------------

def batch_forward(bottleneck: SemanticBottleneck, features: list[Tensor],
                  targets: list[list[int]], quantize: bool = True
                  ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """Features ``[E_i, 384]`` and label lists -> (losses with ``total``, CTC log-probs
    ``[B, T, C]``, their lengths ``[B]``, tokens of the valid frames ``[N]``; no tokens
    unless ``quantize``: the warm-up's frames go to the head unquantized)."""
    pooled, valid, num_tokens = _pool_batch(bottleneck, features)
    if quantize:
        quantized_valid, tokens, commit = bottleneck.vector_quantize(pooled[valid])  # [N, D]
    else:
        quantized_valid, tokens = bottleneck.continuous(pooled[valid]), torch.zeros(0).long()
        commit = pooled.new_zeros(())
    quantized = torch.zeros_like(pooled).masked_scatter(valid[..., None],
                                                        quantized_valid.contiguous())
    log_probs = bottleneck.ctc_logits(quantized).log_softmax(-1)  # [B, T, C]
    lengths = num_tokens * bottleneck.config.ctc_per_token
    ctc = F.ctc_loss(log_probs.transpose(0, 1), torch.tensor(sum(targets, [])), lengths,
                     torch.tensor([len(t) for t in targets]), zero_infinity=True)
    losses = {"ctc": ctc, "commit": commit}
    losses["total"] = ctc + commit
    return losses, log_probs.detach(), lengths, tokens


def _pool_batch(bottleneck: SemanticBottleneck, features: list[Tensor]
                ) -> tuple[Tensor, Tensor, Tensor]:
    """-> pooled frames ``[B, F, D]``, which are real ``[B, F]``, tokens per clip ``[B]``."""
    pool = bottleneck.config.pool_frames
    clips = [pad_to_pool(f[None].float(), pool)[0] for f in features]
    num_tokens = torch.tensor([len(c) // pool for c in clips])
    pooled = bottleneck.pooled(pad_sequence(clips, batch_first=True))  # [B, F, D]
    valid = torch.arange(pooled.shape[1])[None] < num_tokens[:, None]  # [B, F]
    return pooled, valid, num_tokens


@torch.no_grad()
def seed_codebook(bottleneck: SemanticBottleneck, features: list[Tensor], max_frames: int,
                  seed: int) -> int:
    """k-means on up to ``max_frames`` pooled frames of random clips; returns how many."""
    order = np.random.default_rng([seed, 7]).permutation(len(features))
    frames, total = [], 0
    for start in range(0, len(order), 64):
        pooled, valid, _ = _pool_batch(bottleneck, [features[i] for i in order[start:start + 64]])
        frames.append(pooled[valid])
        total += len(frames[-1])
        if total >= max_frames:
            break
    flat = torch.cat(frames)[:max_frames]
    bottleneck.init_codebook(flat, generator=torch.Generator().manual_seed(seed))
    return len(flat)


@torch.no_grad()
def evaluate(bottleneck: SemanticBottleneck, features: list[Tensor], texts: list[str],
             batch_size: int, quantize: bool | None = None) -> dict[str, float]:
    """Held-out CTC loss, greedy character error rate and codebook use (``quantize``:
    through the codebook; default once it is seeded)."""
    quantize = bottleneck.codebook_ready if quantize is None else quantize
    was_training = bottleneck.training
    bottleneck.eval()
    losses, edits, chars, counts = [], 0, 0, torch.zeros(bottleneck.config.codebook_size)
    for start in range(0, len(features), batch_size):
        refs = [ids_to_text(text_to_ids(t)) for t in texts[start:start + batch_size]]
        batch_losses, log_probs, lengths, tokens = batch_forward(
            bottleneck, features[start:start + batch_size], [text_to_ids(r) for r in refs],
            quantize)
        losses.append(batch_losses["ctc"].item() * len(refs))
        for b, ref in enumerate(refs):
            edits += edit_distance(ref, greedy_ctc(log_probs[b], int(lengths[b])))
            chars += len(ref)
        counts += torch.bincount(tokens, minlength=len(counts)).float()
    bottleneck.train(was_training)
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    return {"val_ctc": sum(losses) / max(1, len(features)), "val_cer": edits / max(1, chars),
            "codes_used": int((counts > 0).sum()), "code_perplexity": math.exp(entropy)}


# --- the loop ---------------------------------------------------------------------------

def train(train_set: Sequence[Example], val_set: Sequence[Example],
          config: SemanticConfig | None = None, settings: SemanticTrainSettings | None = None,
          encoder: WhisperEncoder | None = None, progress: bool = True) -> dict:
    """Train (or resume) in ``settings.out``; returns the last metrics, with the exported
    model folder as ``"model"``. ``encoder``: the frozen encoder (default: tiny.en)."""
    config, settings = config or SemanticConfig(), settings or SemanticTrainSettings()
    if not train_set or not val_set:
        raise VoxloopError("semantic training needs clips in both the training and the "
                           "held-out split")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = new_tokenizer(config, encoder)
    train_features = cached_features(tokenizer, train_set, out / "features-train.pt", progress)
    val_features = cached_features(tokenizer, val_set, out / "features-val.pt", progress)
    return fit(tokenizer, (train_features, [text for _, text in train_set]),
               (val_features, [text for _, text in val_set]), settings, progress)


FeatureSet = tuple[list[Tensor], list[str]]  # encoder features [E_i, 384] per clip, words


def fit(tokenizer: SemanticTokenizer, train_set: FeatureSet, val_set: FeatureSet,
        settings: SemanticTrainSettings, progress: bool = True) -> dict:
    """The loop on cached features: train (or resume) ``tokenizer.config``'s bottleneck in
    ``settings.out``, export it to ``OUT/model``; returns the last metrics plus ``model``,
    ``train_minutes`` (over all runs) and ``stopped_early`` (``max_minutes`` ran out)."""
    config, out = tokenizer.config, Path(settings.out)
    (train_features, train_texts), (val_features, val_texts) = train_set, val_set
    if not train_features or not val_features:
        raise VoxloopError("semantic training needs clips in both the training and the "
                           "held-out split")
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    out.mkdir(parents=True, exist_ok=True)
    train_targets = [text_to_ids(text) for text in train_texts]
    torch.manual_seed(settings.seed)
    bottleneck = SemanticBottleneck(config, tokenizer.blocks.encoder.width).train()
    optimizer = torch.optim.AdamW(bottleneck.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    step, history, spent_s = _resume(out / "checkpoint.pt", bottleneck, optimizer, config)
    writer = _tensorboard(out) if settings.tensorboard else None
    metrics, started, done = (history[-1] if history else {}), time.monotonic(), step
    bar = tqdm(range(step, settings.steps), initial=step, total=settings.steps,
               desc="semantic", disable=not progress)
    for step in bar:
        quantize = step >= settings.vq_start_step
        if quantize and not bottleneck.codebook_ready and settings.kmeans_frames > 0:
            frames = seed_codebook(bottleneck, train_features, settings.kmeans_frames,
                                   settings.seed)
            bar.write(f"codebook seeded by k-means on {frames} frames at step {step}")
        rng = np.random.default_rng([settings.seed, step])
        torch.manual_seed(settings.seed * 1_000_003 + step)  # the VQ's dead-code restarts
        picks = rng.integers(len(train_features), size=min(settings.batch_size,
                                                           len(train_features)))
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, settings.lr, settings.warmup_steps, settings.steps,
                                    floor=0.1)
        losses, *_ = batch_forward(bottleneck, [train_features[i] for i in picks],
                                   [train_targets[i] for i in picks], quantize)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(bottleneck.parameters(), 1.0)
        optimizer.step()
        bar.set_postfix(ctc=f"{losses['ctc'].item():.3f}")
        if writer is not None:
            for name, value in losses.items():
                writer.add_scalar(f"train/{name}", value.item(), step)
        done = step + 1
        out_of_time = settings.max_minutes > 0 and \
            time.monotonic() - started > 60 * settings.max_minutes
        if done % settings.eval_every == 0 or done == settings.steps or out_of_time:
            metrics = {"step": done, "train_ctc": losses["ctc"].item(),
                       **evaluate(bottleneck, val_features, val_texts, settings.batch_size,
                                  quantize)}
            history.append(metrics)
            bar.write(json.dumps(metrics))
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, done)
        if done % settings.ckpt_every == 0 or done == settings.steps or out_of_time:
            _checkpoint(out / "checkpoint.pt", bottleneck, optimizer, done, history, settings,
                        spent_s + time.monotonic() - started)
        if out_of_time:
            bar.write(f"stopped at step {done}: --max-minutes {settings.max_minutes:g} spent")
            break
    bar.close()
    if writer is not None:
        writer.close()
    minutes = (spent_s + time.monotonic() - started) / 60
    folder = save_semantic(bottleneck, out / "model", card=_card(
        config, settings, len(train_features), len(val_features), metrics))
    return {**metrics, "model": str(folder), "train_minutes": minutes,
            "stopped_early": done < settings.steps}


def _resume(path: Path, bottleneck: SemanticBottleneck, optimizer: torch.optim.Optimizer,
            config: SemanticConfig) -> tuple[int, list[dict], float]:
    """-> (steps done, evaluation history, seconds spent training so far)."""
    state = resume_checkpoint(path, config.to_json(), "semantic tokenizer", weights_only=True)
    if state is None:
        return 0, [], 0.0
    bottleneck.load_state_dict(state["bottleneck"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], list(state["history"]), float(state.get("train_s", 0.0))


def _checkpoint(path: Path, bottleneck: SemanticBottleneck, optimizer: torch.optim.Optimizer,
                step: int, history: list[dict], settings: SemanticTrainSettings,
                train_s: float) -> None:
    torch_save_atomic(path, {
        "bottleneck": bottleneck.state_dict(), "optimizer": optimizer.state_dict(),
        "step": step, "history": history, "config": bottleneck.config.to_json(),
        "settings": asdict(settings), "train_s": train_s})


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def _card(config: SemanticConfig, settings: SemanticTrainSettings, num_train: int,
          num_val: int, metrics: dict) -> str:
    return (f"# Semantic tokenizer (Whisper tiny.en encoder, frozen, + VQ)\n\n"
            f"{config.codebook_size} tokens at {config.frame_rate_hz:g} Hz, block-causal "
            f"blocks of {config.block_ms} ms. Pooler and codebook trained with character CTC "
            f"on {num_train} clips, measured on {num_val} held-out clips.\n\n"
            f"Settings: `{json.dumps(asdict(settings))}`\n\n"
            f"Config: `{json.dumps(config.to_json())}`\n\n"
            f"Held-out metrics: `{json.dumps(metrics)}`\n")
