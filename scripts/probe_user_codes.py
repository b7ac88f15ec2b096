"""Can the user side of the student recognize words from codec codes, and what input helps?

A probe, not a product path: a small causal transformer over the user frames of a packed
dataset (``voxloop distill pack``), trained with CTC on the words the user said, and judged by
greedy word error rate on the valid and held-out splits. Two inputs side by side:

- ``embed``: learned embeddings of the K codes, summed (what the student uses now);
- ``latent``: the codec's own dequantized latent (sum of the K codebook vectors, frozen),
  projected: sounds the codec finds similar start out close.

Usage: python scripts/probe_user_codes.py PACKED.npz [--steps 1000] [--kinds embed latent]
       [--out out/probe-user-codes.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxloop.distill.evals.metrics import word_error_rate
from voxloop.distill.student.pack import PackedData


class Probe(nn.Module):
    def __init__(self, kind: str, codebooks: torch.Tensor, vocab: int, d: int = 192,
                 layers: int = 4, max_len: int = 512) -> None:
        super().__init__()
        self.kind, self.k, self.n = kind, codebooks.shape[0], codebooks.shape[1]
        if kind == "latent":
            self.register_buffer("codebooks", codebooks)  # [K, N, D] frozen
            self.inp = nn.Linear(codebooks.shape[2], d)
        else:
            self.inp = nn.Embedding(self.k * codebooks.shape[1], d)
        self.pos = nn.Embedding(max_len, d)
        block = nn.TransformerEncoderLayer(d, 4, 4 * d, 0.2, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(block, layers)
        self.out = nn.Linear(d, vocab)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, T, K]`` -> log-probs ``[B, T, V]``."""
        if self.kind == "latent":
            x = sum(self.codebooks[k][codes[..., k]] for k in range(self.k))
            x = self.inp(x)
        else:
            offsets = torch.arange(self.k) * self.n
            x = self.inp(codes + offsets).sum(2)
        x = x + self.pos(torch.arange(codes.shape[1]))
        mask = nn.Transformer.generate_square_subsequent_mask(codes.shape[1])
        return self.out(self.body(x, mask=mask, is_causal=True)).log_softmax(-1)


def batch(data: PackedData, rows, k: int, rng=None):
    users = []
    for i in rows:
        u = data.user(i)[:k].T.astype(np.int64)  # [T, K]
        if rng is not None and rng.random() < 0.5:  # frame dropout
            u = u[rng.random(len(u)) > 0.1]
        users.append(u)
    t = max(len(u) for u in users)
    codes = np.zeros((len(rows), t, k), np.int64)
    for j, u in enumerate(users):
        codes[j, :len(u)] = u
    targets = [data.ctc(i) for i in rows]
    return (torch.from_numpy(codes), torch.tensor([len(u) for u in users]),
            torch.from_numpy(np.concatenate(targets)), torch.tensor([len(x) for x in targets]))


def greedy_words(logp: torch.Tensor, lengths, words: list[str]) -> list[str]:
    out = []
    for row, n in zip(logp.argmax(-1), lengths, strict=True):
        ids = torch.unique_consecutive(row[:n]).tolist()
        out.append(" ".join(words[i] for i in ids if i > 1))
    return out


def evaluate(model, data, rows, k, words) -> dict:
    model.eval()
    refs, hyps, losses = [], [], []
    with torch.no_grad():
        for s in range(0, len(rows), 64):
            part = rows[s:s + 64]
            codes, n, tgt, tn = batch(data, part, k)
            logp = model(codes)
            losses.append(F.ctc_loss(logp.transpose(0, 1), tgt, n, tn, zero_infinity=True).item())
            hyps += greedy_words(logp, n, words)
            refs += [" ".join(words[i] for i in data.ctc(i)) for i in part]
    model.train()
    return {"ctc": float(np.mean(losses)), "wer_pct": 100 * word_error_rate(refs, hyps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("packed")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--kinds", nargs="+", choices=("embed", "latent"), default=["embed", "latent"])
    ap.add_argument("--codebooks", type=int, default=4)
    ap.add_argument("--codec", default="voxloop-codec-16k")
    ap.add_argument("--out", default="out/probe-user-codes.json")
    args = ap.parse_args()
    from voxloop.codecs.registry import load_codec

    torch.set_num_threads(2)
    data = PackedData.load(args.packed)
    codec = load_codec(args.codec)
    books = torch.stack(codec.codebook_vectors(args.codebooks)).detach()
    words = data.vocab["ctc"]
    splits = {s: data.indices(s) for s in ("valid", "heldout_voice", "heldout_phrasing")}
    results = {}
    for kind in args.kinds:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        model = Probe(kind, books, len(words))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        train_rows, curve, start = data.indices("train"), [], time.time()
        for step in range(1, args.steps + 1):
            codes, n, tgt, tn = batch(data, rng.choice(train_rows, 32), args.codebooks, rng)
            loss = F.ctc_loss(model(codes).transpose(0, 1), tgt, n, tn, zero_infinity=True)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step % 250 == 0 or step == args.steps:
                point = {"step": step, "train_ctc": loss.item(),
                         **{s: evaluate(model, data, r, args.codebooks, words)
                            for s, r in splits.items()}}
                curve.append(point)
                print(kind, json.dumps(point), flush=True)
        results[kind] = {"curve": curve, "minutes": (time.time() - start) / 60}
    with open(args.out, "w") as f:
        json.dump({"packed": args.packed, "steps": args.steps, "results": results}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
