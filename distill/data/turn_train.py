"""Train the end-of-turn head on ``turn_data``'s examples; measure it; export it with a card.

Every ``arch`` asked for is trained the same way (AdamW, BCE, batches of ``batch_size``
examples, ``token_noise`` of the tokens replaced at random, the epoch with the best
validation loss kept) and measured on every split;
the one with the lowest validation loss is exported. Measured per split:

- ``accuracy``: P(finished) >= 0.5 against the label;
- ``false_cutoff``: unfinished examples (a question cut at a word, or a filler after the
  cut) whose wait at medium eagerness (``wait_ms``) is shorter than ``PAUSE_PROBE_MS``:
  a user pausing that long there would be cut off;
- ``fast``: finished examples whose wait at medium eagerness is at most ``FAST_MS``;
- ``wait_p50_ms``: the median wait at medium eagerness on finished examples.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from voxloop.distill.data.turn_data import EVAL_SPLITS, KINDS, TurnDataSettings, load_split

PAUSE_PROBE_MS = 1000
FAST_MS = 100


@dataclass(frozen=True)
class TurnTrainSettings:
    archs: tuple[str, ...] = field(default=("gru", "pool"), metadata={
        "help": "heads to train and compare (the best on valid is exported)"})
    hidden_dim: int = field(default=64, metadata={"help": "head width"})
    epochs: int = field(default=12, metadata={"help": "passes over the training examples"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate"})
    token_noise: float = field(default=0.1, metadata={
        "help": "share of training tokens replaced by random ones (the head overfits "
                "a few thousand examples within 5 epochs without it)"})
    train_seed: int = field(default=0, metadata={"help": "initialization and batch order"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    export: str = field(default="models/voxloop-end-of-turn", metadata={
        "help": "where the chosen model is written"})


def measure(probs: np.ndarray, labels: np.ndarray, kinds: np.ndarray) -> dict:
    from voxloop.codecs.end_of_turn import wait_ms

    waits = np.array([wait_ms(float(p), "medium") for p in probs])
    done, cut = labels == 1, labels == 0
    by_kind = {KINDS[k]: float(np.mean((probs[kinds == k] >= 0.5) == labels[kinds == k]))
               for k in sorted(set(kinds.tolist()))}
    return {"examples": len(labels),
            "accuracy": float(np.mean((probs >= 0.5) == (labels == 1))),
            "false_cutoff": float(np.mean(waits[cut] < PAUSE_PROBE_MS)) if cut.any() else None,
            "fast": float(np.mean(waits[done] <= FAST_MS)) if done.any() else None,
            "wait_p50_ms": float(np.median(waits[done])) if done.any() else None,
            "accuracy_by_kind": by_kind}


def train_head(config, table, train: dict, valid: dict, settings: TurnTrainSettings,
               progress=print):
    """One head trained on ``train``; returns (head, best validation loss)."""
    import copy

    import torch

    from voxloop.codecs.end_of_turn import EndOfTurnHead, pad_tokens

    torch.manual_seed(settings.train_seed)
    head = EndOfTurnHead(config)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.01)
    seqs = [torch.from_numpy(s) for s in train["sequences"]]
    labels = torch.from_numpy(train["labels"].astype(np.float32))
    rng = np.random.default_rng(settings.train_seed)
    best, best_state = float("inf"), None
    for epoch in range(settings.epochs):
        head.train()
        order = rng.permutation(len(seqs))
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            tokens, lengths = pad_tokens([seqs[i] for i in batch])
            noisy = torch.rand(tokens.shape) < settings.token_noise
            tokens[noisy] = torch.randint(0, table.shape[0], (int(noisy.sum()),))
            logits = head(table[tokens], lengths)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val = validation_loss(head, table, valid)
        if val < best:
            best, best_state = val, copy.deepcopy(head.state_dict())
        if epoch % 5 == 4 or epoch == settings.epochs - 1:
            progress(f"{config.arch} epoch {epoch + 1}: train loss {loss.item():.3f}, "
                     f"valid loss {val:.3f}")
    head.load_state_dict(best_state)
    return head.eval(), best


def predict(head, table, split: dict) -> np.ndarray:
    import torch

    from voxloop.codecs.end_of_turn import pad_tokens

    head.eval()
    out = []
    with torch.no_grad():
        seqs = [torch.from_numpy(s) for s in split["sequences"]]
        for start in range(0, len(seqs), 256):
            tokens, lengths = pad_tokens(seqs[start:start + 256])
            out.append(torch.sigmoid(head(table[tokens], lengths)).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def validation_loss(head, table, split: dict) -> float:
    p = np.clip(predict(head, table, split), 1e-6, 1 - 1e-6)
    y = split["labels"]
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def train_end_of_turn(data: TurnDataSettings, settings: TurnTrainSettings,
                      progress=print) -> dict:
    """Train every arch, measure each on every split, export the best; returns the summary."""
    import torch

    from voxloop.codecs.end_of_turn import EndOfTurnConfig, save_end_of_turn
    from voxloop.codecs.semantic_tokens import load_semantic_model
    from voxloop.models import find_model, weights_sha256

    torch.set_num_threads(settings.threads)
    semantic = find_model(data.semantic, "semantic tokenizer", marker="model.safetensors")
    table = load_semantic_model(semantic).codebook_vectors()
    splits = {s: load_split(data.data_out, s) for s in ("train", *EVAL_SPLITS)}
    base = EndOfTurnConfig(hidden_dim=settings.hidden_dim, code_dim=table.shape[1],
                           codebook_size=table.shape[0], semantic=semantic.name,
                           semantic_sha256=weights_sha256(semantic))
    results, heads = {}, {}
    for arch in settings.archs:
        t0 = time.perf_counter()
        head, val = train_head(replace(base, arch=arch), table, splits["train"],
                               splits["valid"], settings, progress)
        heads[arch] = head
        results[arch] = {"valid_loss": val, "train_s": time.perf_counter() - t0,
                         "parameters": sum(p.numel() for p in head.parameters()),
                         "splits": {s: measure(predict(head, table, d), d["labels"], d["kinds"])
                                    for s, d in splits.items()}}
    chosen = min(results, key=lambda a: results[a]["valid_loss"])
    summary = {"chosen": chosen, "results": results, "data": asdict(data),
               "train": asdict(settings),
               "examples": {s: len(d["labels"]) for s, d in splits.items()}}
    folder = save_end_of_turn(heads[chosen], settings.export, card(summary))
    (Path(folder) / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def card(summary: dict) -> str:
    data, train = summary["data"], summary["train"]
    lines = [
        "# voxloop-end-of-turn: P(the user has finished) from the semantic tokens", "",
        f"A `{summary['chosen']}` head over the frozen codebook vectors of "
        f"`{data['semantic']}` (the tokens the semantic tokenizer already makes), float16. "
        "`semantic_vad` asks it at every pause; the wait before the turn ends is "
        "cap x (1 - P)^2 (caps 8 / 4 / 2 s for low / medium / high eagerness).", "",
        "Command: `voxloop distill end-of-turn --train-items "
        f"{data['train_items']} --eval-items {data['eval_items']} --epochs {train['epochs']} "
        f"--token-noise {train['token_noise']} --threads {train['threads']}`", "",
        "Data: the synthetic pipeline's plan items (user voices, phrasings and splits of "
        "data/distill-v2's plan), spoken now by the same TTS voices: each question whole "
        "(finished), cut at a random word boundary (not finished), and one of: its two parts "
        "joined by a 300-1,500 ms pause (finished), a filler after the cut (not finished), "
        "a filler before or inside it (finished). Train on the train split only; the held-out "
        f"voices and phrasings never train. Examples: {summary['examples']}.", "",
        f"Measured (false cut-off: an unfinished example whose medium-eagerness wait is "
        f"under {PAUSE_PROBE_MS} ms; fast: a finished one answered after at most "
        f"{FAST_MS} ms of silence):", "",
        "| head | params | split | accuracy % | false cut-off % | fast % | wait p50 ms |",
        "|---|---|---|---|---|---|---|"]
    for arch, result in summary["results"].items():
        for split, m in result["splits"].items():
            if split == "train":
                continue
            lines.append(f"| {arch} | {result['parameters']} | {split} | "
                         f"{_pct(m['accuracy'])} | {_pct(m['false_cutoff'])} | "
                         f"{_pct(m['fast'])} | {m['wait_p50_ms']:.0f} |")
    lines += ["", f"Chosen: `{summary['chosen']}` (lowest validation loss: " + ", ".join(
        f"{a} {r['valid_loss']:.3f}" for a, r in summary["results"].items()) + ")."]
    return "\n".join(lines) + "\n"
