"""Can the user side of the student recognize words from its input, and which input helps?

A probe, not a product path: a small causal transformer over the user frames of a packed
dataset (``voxloop distill pack``), trained with CTC on the words the user said, and judged by
greedy word error rate on the valid and held-out splits. Every input sees the same turns,
the same batches (one seed) and the same frame dropout:

- ``embed``: learned embeddings of the K acoustic codec codes, summed;
- ``latent``: the acoustic codec's own dequantized latent (sum of the K codebook vectors,
  frozen), projected: sounds the codec finds similar start out close;
- ``whisper``: the Whisper tiny.en encoder's continuous features, block-causal as the
  semantic tokenizer hears them (``--block-ms``), mean-pooled from 50 to 25 Hz, projected;
- ``semantic``: the tokens of each ``--semantic`` tokenizer (one input per folder, named
  ``semantic-<folder>``), their codebook vectors (frozen) projected.

The encoder features come from the dataset's shards (``--data``, user audio matched to the
pack by turn id) through the per-shard cache of ``voxloop distill semantic`` (``--features``).
Train the tokenizers on the pack's train split only (``voxloop distill semantic --data
data/distill-v1``), so nothing held out leaks.

Measured (distill-v1 packed with ``--targets intended``, 1000 steps, seed 0; WER %,
valid / held-out voices / held-out phrasings): latent 52.7 / 70.0 / 72.8; whisper
21.0 / 25.4 / 41.9; semantic 25 Hz (tokenizer trained on v1's train split) 31.7 / 40.9 /
51.0; semantic 12.5 Hz (same data) 31.3 / 34.9 / 52.2; semantic 25 Hz with
models/voxloop-semantic (v2's first 6,880 train turns + v1's train split) 27.1 / 35.7 /
50.8. Held-out phrasings are bounded by the word-level CTC (their new words are
not in the probe's vocabulary). The tokens cost 6-10 points against the continuous
features: one of 1024 codes per frame (~9.5 bits of entropy) is fit to the tokenizer's
training voices and sentences (its CTC falls to 0.05 on them, 1.0-1.6 elsewhere), so
unseen voices lose most (115 training voices instead of 8 close a third of that gap).

Usage: python scripts/probe_user_codes.py PACKED.npz [--steps 1000]
       [--kinds embed latent whisper semantic] [--data data/distill-v1]
       [--semantic models/voxloop-semantic runs/semantic-v1/model ...]
       [--out out/probe/user-inputs.json]   (and .md: the table)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxloop.distill.evals.metrics import word_error_rate
from voxloop.distill.student.pack import PackedData

SPLITS = ("valid", "heldout_voice", "heldout_phrasing")


class Codes(nn.Module):
    """``[B, T, K]`` codec codes -> ``[B, T, d]``: learned (embed) or frozen latent sum."""

    def __init__(self, kind: str, codebooks: torch.Tensor, d: int) -> None:
        super().__init__()
        self.kind, self.k, self.n = kind, codebooks.shape[0], codebooks.shape[1]
        if kind == "latent":
            self.register_buffer("codebooks", codebooks)  # [K, N, D] frozen
            self.inp = nn.Linear(codebooks.shape[2], d)
        else:
            self.inp = nn.Embedding(self.k * self.n, d)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if self.kind == "latent":
            return self.inp(sum(self.codebooks[k][codes[..., k]] for k in range(self.k)))
        return self.inp(codes + torch.arange(self.k) * self.n).sum(2)


class Tokens(nn.Module):
    """``[B, T]`` semantic tokens -> their frozen codebook vectors ``[N, D]`` -> ``[B, T, d]``."""

    def __init__(self, table: torch.Tensor, d: int) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.inp = nn.Linear(table.shape[1], d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inp(self.table[tokens])


class Probe(nn.Module):
    def __init__(self, inp: nn.Module, vocab: int, d: int = 192, layers: int = 4,
                 max_len: int = 512) -> None:
        super().__init__()
        self.inp, self.pos = inp, nn.Embedding(max_len, d)
        block = nn.TransformerEncoderLayer(d, 4, 4 * d, 0.2, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(block, layers)
        self.out = nn.Linear(d, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, ...]`` -> log-probs ``[B, T, V]``."""
        x = self.inp(x)
        x = x + self.pos(torch.arange(x.shape[1]))
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        return self.out(self.body(x, mask=mask, is_causal=True)).log_softmax(-1)


def batch(data: PackedData, frames: list[np.ndarray], rows, drop_rng=None):
    """Rows -> (padded frames ``[B, T, ...]``, lengths, CTC targets, target lengths).
    ``drop_rng``: frame dropout (half the rows lose 10% of their frames)."""
    users = []
    for i in rows:
        u = frames[i]
        if drop_rng is not None:
            keep = drop_rng.random(512)[:len(u)] > 0.1  # draws independent of the input
            if drop_rng.random() < 0.5:
                u = u[keep]
        users.append(u)
    t = max(len(u) for u in users)
    x = np.zeros((len(rows), t, *users[0].shape[1:]), users[0].dtype)
    for j, u in enumerate(users):
        x[j, :len(u)] = u
    targets = [data.ctc(i) for i in rows]
    return (torch.from_numpy(x), torch.tensor([len(u) for u in users]),
            torch.from_numpy(np.concatenate(targets)), torch.tensor([len(x) for x in targets]))


def greedy_words(logp: torch.Tensor, lengths, words: list[str]) -> list[str]:
    out = []
    for row, n in zip(logp.argmax(-1), lengths, strict=True):
        ids = torch.unique_consecutive(row[:n]).tolist()
        out.append(" ".join(words[i] for i in ids if i > 1))
    return out


def evaluate(model, data, frames, rows, words) -> dict:
    model.eval()
    refs, hyps, losses = [], [], []
    with torch.no_grad():
        for s in range(0, len(rows), 64):
            part = rows[s:s + 64]
            x, n, tgt, tn = batch(data, frames, part)
            logp = model(x)
            losses.append(F.ctc_loss(logp.transpose(0, 1), tgt, n, tn, zero_infinity=True).item())
            hyps += greedy_words(logp, n, words)
            refs += [" ".join(words[i] for i in data.ctc(i)) for i in part]
    model.train()
    return {"ctc": float(np.mean(losses)), "wer_pct": 100 * word_error_rate(refs, hyps)}


def encoder_features(data: PackedData, folder: str, cache: str, block_ms: int) -> list:
    """Block-causal Whisper features ``[E, 384]`` (float16) per pack row, by turn id."""
    from voxloop.codecs.semantic import SemanticConfig, new_tokenizer
    from voxloop.distill.data.semantic_job import split_features

    tokenizer = new_tokenizer(SemanticConfig(block_ms=block_ms))
    by_id = {}
    for split in ("train", *SPLITS):
        clips = split_features(tokenizer, folder, split, cache)
        by_id.update(zip(clips.ids, clips.features, strict=True))
    missing = [i for i in data.id if i not in by_id]
    if missing:
        raise SystemExit(f"{len(missing)} packed turns have no audio in {folder}: {missing[:3]}")
    return [by_id[i] for i in data.id]


def whisper_frames(features: list) -> list[np.ndarray]:
    """50 Hz -> 25 Hz by the mean of each pair (the last frame repeated when odd)."""
    from voxloop.codecs.semantic import pad_to_pool

    return [pad_to_pool(f[None].float(), 2)[0].view(-1, 2, f.shape[1]).mean(1).numpy()
            for f in features]


def semantic_frames(folder: str, features: list) -> tuple[list[np.ndarray], torch.Tensor, dict]:
    """Tokens ``[F]`` per row (as ``encode`` gives them), the codebook vectors, the config."""
    from voxloop.codecs.semantic import load_semantic, pad_to_pool

    tokenizer = load_semantic(folder)
    bottleneck, pool = tokenizer.bottleneck, tokenizer.config.pool_frames
    with torch.no_grad():
        tokens = [bottleneck.quantize(bottleneck.pooled(pad_to_pool(f[None].float(), pool)))[0]
                  .numpy() for f in features]
    return tokens, tokenizer.codebook_vectors(), tokenizer.config.to_json()


def train_probe(name, make, data, frames, words, steps, threads_note) -> dict:
    torch.manual_seed(0)  # before its input layer is made: the same start whatever came before
    inp = make()
    pick_rng, drop_rng = np.random.default_rng(0), np.random.default_rng(1)
    model = Probe(inp, len(words))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    train_rows, curve, start = data.indices("train"), [], time.time()
    splits = {s: data.indices(s) for s in SPLITS}
    for step in range(1, steps + 1):
        x, n, tgt, tn = batch(data, frames, pick_rng.choice(train_rows, 32), drop_rng)
        loss = F.ctc_loss(model(x).transpose(0, 1), tgt, n, tn, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == steps:
            point = {"step": step, "train_ctc": loss.item(),
                     **{s: evaluate(model, data, frames, r, words) for s, r in splits.items()}}
            curve.append(point)
            print(name, json.dumps(point), flush=True)
    return {"curve": curve, "minutes": (time.time() - start) / 60, "threads": threads_note,
            "frames_per_turn": float(np.mean([len(frames[i]) for i in range(len(data))]))}


def table(results: dict) -> str:
    lines = ["| input | frames/turn | valid WER % | held-out voices WER % | "
             "held-out phrasings WER % |", "|---|---|---|---|---|"]
    for name, r in results.items():
        last = r["curve"][-1]
        lines.append(f"| {name} | {r['frames_per_turn']:.0f} | " + " | ".join(
            f"{last[s]['wer_pct']:.1f}" for s in SPLITS) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packed")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--kinds", nargs="+", default=["latent", "whisper", "semantic"],
                    choices=("embed", "latent", "whisper", "semantic"))
    ap.add_argument("--codebooks", type=int, default=4)
    ap.add_argument("--codec", default="voxloop-codec-16k")
    ap.add_argument("--data", default="data/distill-v1", help="the pack's dataset folder")
    ap.add_argument("--features", default="runs/semantic-features-v1",
                    help="per-shard encoder feature cache (voxloop distill semantic's)")
    ap.add_argument("--block-ms", type=int, default=1000, help="the encoder's causal blocks")
    ap.add_argument("--semantic", nargs="*", default=["models/voxloop-semantic"],
                    help="tokenizer folders (trained on no held-out turn of the pack)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="out/probe/user-inputs.json")
    args = ap.parse_args()
    from voxloop.codecs.registry import load_codec

    torch.set_num_threads(args.threads)
    data = PackedData.load(args.packed)
    words, results, inputs = data.vocab["ctc"], {}, {}
    books = torch.stack(load_codec(args.codec).codebook_vectors(args.codebooks)).detach()
    codes = [data.user(i)[:args.codebooks].T.astype(np.int64) for i in range(len(data))]
    for kind in ("embed", "latent"):
        if kind in args.kinds:
            inputs[kind] = (lambda kind=kind: Codes(kind, books, 192), codes, {})
    if "whisper" in args.kinds or "semantic" in args.kinds:
        features = encoder_features(data, args.data, args.features, args.block_ms)
        if "whisper" in args.kinds:
            inputs["whisper"] = (lambda: nn.Linear(384, 192), whisper_frames(features), {})
        for folder in args.semantic if "semantic" in args.kinds else []:
            tokens, table_, config = semantic_frames(folder, features)
            name = f"semantic-{Path(folder).parent.name or Path(folder).name}"
            name = name if name not in inputs else f"semantic-{folder}"  # same last parts
            inputs[name] = (lambda table_=table_: Tokens(table_, 192), tokens,
                            {"tokenizer": folder, "config": config})
    for name, (make, frames, info) in inputs.items():
        results[name] = {**info, **train_probe(name, make, data, frames, words, args.steps,
                                               args.threads)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"packed": args.packed, "steps": args.steps, "results": results}, f, indent=2)
    markdown = table(results)
    Path(args.out).with_suffix(".md").write_text(markdown + "\n")
    print(markdown)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
