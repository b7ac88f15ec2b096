"""Train the semantic tokenizer's pooler + codebook with CTC on characters.

The Whisper encoder is frozen, so its block-causal features are computed once per clip and
cached in the run folder (``features-train.pt``, ``features-val.pt``; float16, reused while
the clips and the encoder settings stay the same). Each step pools a batch of cached
features, quantizes them (straight-through, EMA codebook with dead-code restarts,
commitment loss) and scores a small CTC head over characters (vocabulary-free: any
English text). The caller gives the clips and the split (``(wav path or 16 kHz samples,
text)`` pairs; the held-out voices are chosen in distill, which builds the data).

Every ``ckpt_every`` steps the run state (bottleneck, optimizer, step, history) is written
atomically to ``OUT/checkpoint.pt``; started again, training resumes from it with the same
batches (the batch order depends only on seed and step). At the end the tokenizer is
exported to ``OUT/model`` (config.json + float16 model.safetensors + card).
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
from voxloop.codecs.semantic_stream import MIN_PEAK_LOG10
from voxloop.codecs.whisper_encoder import WhisperEncoder
from voxloop.errors import VoxloopError
from voxloop.training import cosine_lr, torch_save_atomic

Example = tuple[str | Path | np.ndarray, str]  # a wav file or 16 kHz samples, its words
FEATURES_VERSION = 1  # bump when the encoder's features change meaning


@dataclass(frozen=True)
class SemanticTrainSettings:
    out: str = field(default="runs/semantic", metadata={"help": "run folder"})
    steps: int = field(default=3000, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "clips per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    warmup_steps: int = field(default=100, metadata={"help": "linear warm-up steps"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    ckpt_every: int = field(default=250, metadata={"help": "checkpoint interval in steps"})
    eval_every: int = field(default=250, metadata={"help": "held-out evaluation interval"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: leave as is)"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    tensorboard: bool = field(default=False, metadata={"help": "log to OUT/tensorboard"})


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


def _fingerprint(examples: Sequence[Example], config: SemanticConfig) -> str:
    digest = hashlib.sha256(json.dumps([FEATURES_VERSION, config.whisper_sha256,
                                        config.block_ms, MIN_PEAK_LOG10]).encode())
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
                  targets: list[list[int]]) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
    """Features ``[E_i, 384]`` and label lists -> (losses with ``total``, CTC log-probs
    ``[B, T, C]``, their lengths ``[B]``, tokens of the valid frames ``[N]``)."""
    pool = bottleneck.config.pool_frames
    clips = [pad_to_pool(f[None].float(), pool)[0] for f in features]
    num_tokens = torch.tensor([len(c) // pool for c in clips])
    pooled = bottleneck.pooled(pad_sequence(clips, batch_first=True))  # [B, F, D]
    valid = torch.arange(pooled.shape[1])[None] < num_tokens[:, None]  # [B, F]
    quantized_valid, tokens, commit = bottleneck.vq(pooled[valid].t()[None])  # [1, D, N]
    quantized = torch.zeros_like(pooled).masked_scatter(
        valid[..., None], quantized_valid[0].t().contiguous())
    log_probs = bottleneck.ctc_logits(quantized).log_softmax(-1)  # [B, T, C]
    lengths = num_tokens * bottleneck.config.ctc_per_token
    ctc = F.ctc_loss(log_probs.transpose(0, 1), torch.tensor(sum(targets, [])), lengths,
                     torch.tensor([len(t) for t in targets]), zero_infinity=True)
    losses = {"ctc": ctc, "commit": commit.sum()}
    losses["total"] = ctc + losses["commit"]
    return losses, log_probs.detach(), lengths, tokens.flatten()


@torch.no_grad()
def evaluate(bottleneck: SemanticBottleneck, features: list[Tensor], texts: list[str],
             batch_size: int) -> dict[str, float]:
    """Held-out CTC loss, greedy character error rate and codebook use."""
    was_training = bottleneck.training
    bottleneck.eval()
    losses, edits, chars, counts = [], 0, 0, torch.zeros(bottleneck.config.codebook_size)
    for start in range(0, len(features), batch_size):
        refs = [ids_to_text(text_to_ids(t)) for t in texts[start:start + batch_size]]
        batch_losses, log_probs, lengths, tokens = batch_forward(
            bottleneck, features[start:start + batch_size], [text_to_ids(r) for r in refs])
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
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = new_tokenizer(config, encoder)
    train_features = cached_features(tokenizer, train_set, out / "features-train.pt", progress)
    val_features = cached_features(tokenizer, val_set, out / "features-val.pt", progress)
    train_targets = [text_to_ids(text) for _, text in train_set]
    val_texts = [text for _, text in val_set]

    torch.manual_seed(settings.seed)
    bottleneck = SemanticBottleneck(config, tokenizer.blocks.encoder.width).train()
    optimizer = torch.optim.AdamW(bottleneck.parameters(), lr=settings.lr,
                                  weight_decay=settings.weight_decay)
    step, history = _resume(out / "checkpoint.pt", bottleneck, optimizer, config)
    writer = _tensorboard(out) if settings.tensorboard else None
    metrics = history[-1] if history else {}
    bar = tqdm(range(step, settings.steps), initial=step, total=settings.steps,
               desc="semantic", disable=not progress)
    for step in bar:
        rng = np.random.default_rng([settings.seed, step])
        torch.manual_seed(settings.seed * 1_000_003 + step)  # the VQ's dead-code restarts
        picks = rng.integers(len(train_features), size=min(settings.batch_size,
                                                           len(train_features)))
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, settings.lr, settings.warmup_steps, settings.steps,
                                    floor=0.1)
        losses, *_ = batch_forward(bottleneck, [train_features[i] for i in picks],
                                   [train_targets[i] for i in picks])
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(bottleneck.parameters(), 1.0)
        optimizer.step()
        bar.set_postfix(ctc=f"{losses['ctc'].item():.3f}")
        if writer is not None:
            for name, value in losses.items():
                writer.add_scalar(f"train/{name}", value.item(), step)
        done = step + 1
        if done % settings.eval_every == 0 or done == settings.steps:
            metrics = {"step": done, "train_ctc": losses["ctc"].item(),
                       **evaluate(bottleneck, val_features, val_texts, settings.batch_size)}
            history.append(metrics)
            bar.write(json.dumps(metrics))
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, done)
        if done % settings.ckpt_every == 0 or done == settings.steps:
            _checkpoint(out / "checkpoint.pt", bottleneck, optimizer, done, history, settings)
    if writer is not None:
        writer.close()
    folder = save_semantic(bottleneck, out / "model", card=_card(config, settings, len(
        train_set), len(val_set), metrics))
    return {**metrics, "model": str(folder)}


def _resume(path: Path, bottleneck: SemanticBottleneck, optimizer: torch.optim.Optimizer,
            config: SemanticConfig) -> tuple[int, list[dict]]:
    if not path.is_file():
        return 0, []
    state = torch.load(path, weights_only=True)
    if state["config"] != config.to_json():
        raise VoxloopError(f"{path} was trained with another SemanticConfig: use a new --out "
                           "or the same settings")
    bottleneck.load_state_dict(state["bottleneck"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], list(state["history"])


def _checkpoint(path: Path, bottleneck: SemanticBottleneck, optimizer: torch.optim.Optimizer,
                step: int, history: list[dict], settings: SemanticTrainSettings) -> None:
    torch_save_atomic(path, {
        "bottleneck": bottleneck.state_dict(), "optimizer": optimizer.state_dict(),
        "step": step, "history": history, "config": bottleneck.config.to_json(),
        "settings": asdict(settings)})


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
