"""Which fixed answer the user asked for, read from the words the student heard
(:class:`HeardIntents`): a bag-of-words head over its CTC transcript.

The student's ears hear word sequences it trained on better than new ones: on held-out
phrasings most of its wrong answers come from a question misheard into another trained
one ("how do bees help plants" -> "how do bees make planet" -> the planets' answer).
Words and word pairs, read without their order, still point to the right question there
("bees"). The head is a linear softmax over them, fitted on the domain's own training
phrasings (every intent's, the held-out phrasing left out; compositional templates with
their slots filled; the questions outside the domain as the refusal), each also copied
with words dropped, replaced and inserted at random, as the ears mishear them.

Where the student is unsure of its words (their log-probability at most ``max_logprob``)
and the head is sure (``min_prob``) of a fixed answer the student did not write, the
student says that answer instead (:mod:`generate`); the head never writes a composed
answer (numbers, countries: the words carry those).

    head = fit_heard_intents(vocab["ctc"])        # ~10 s
    head.fixed_answer("tell me the freezing planet of water")  # -> "Water freezes at ..."
    save_heard_intents(head, folder); load_heard_intents(folder)
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.student.config import HeardIntentsConfig
from voxloop.distill.student.vocab import user_words
from voxloop.distill.teachers.domain.data import FALLBACK_INTENT, examples, load_domain
from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE

FILENAME = "heard_intents.safetensors"
DEFAULTS = HeardIntentsConfig()


def unigrams(words: list[str]) -> list[str]:
    """The words, numbers as ``<n>``: they name slots, not questions."""
    return ["<n>" if w.isdigit() else w for w in words]


def features(words: list[str]) -> list[str]:
    """Unigrams and neighbouring pairs, with the start ``^`` and end ``$`` as words."""
    words = unigrams(words)
    return words + [f"{a} {b}" for a, b in zip(["^", *words], [*words, "$"], strict=True)]


class HeardIntents:
    """``weight [F, L]`` and ``bias [L]`` over ``names`` (features) and ``labels``
    (intents); ``answers``: the fixed answer of each label that has one."""

    def __init__(self, names: list[str], labels: list[str], weight: torch.Tensor,
                 bias: torch.Tensor, answers: dict[str, str],
                 config: HeardIntentsConfig = DEFAULTS) -> None:
        self.names, self.labels, self.answers, self.config = names, labels, answers, config
        self.weight, self.bias = weight.float(), bias.float()
        self._index = {name: i for i, name in enumerate(names)}

    def probabilities(self, heard: str) -> np.ndarray | None:
        """``[L]``: the head's probability of each label; None if it knows no feature."""
        ids = [self._index[f] for f in features(user_words(heard)) if f in self._index]
        if not ids:
            return None
        return torch.softmax(self.weight[ids].sum(0) + self.bias, -1).numpy()

    def read(self, heard: str) -> tuple[str | None, float]:
        """The likeliest intent's fixed answer (None for a composed one, or where the head
        knows no feature) and the head's probability of that intent (0 where it knows none)."""
        probs = self.probabilities(heard)
        if probs is None:
            return None, 0.0
        return self.answers.get(self.labels[int(probs.argmax())]), float(probs.max())

    def fixed_answer(self, heard: str, min_prob: float | None = None) -> str | None:
        """The fixed answer the heard words point to, where the head gives it at least
        ``min_prob`` (None: the config's ``min_prob``; 0: its likeliest intent's answer)."""
        answer, prob = self.read(heard)
        return answer if prob >= (self.config.min_prob if min_prob is None else min_prob) \
            else None


def training_questions(config: HeardIntentsConfig = DEFAULTS,
                       exclude_templates: frozenset[int] = frozenset()) -> list[tuple[str, str]]:
    """``(question, intent)`` of every trained phrasing (not the held-out one, nor those in
    ``exclude_templates``: a fold left out to measure the head on phrasings it never read)."""
    left_out = {HELDOUT_TEMPLATE, *exclude_templates}
    asked = examples(config.fills_per_template, config.seed, more=1_000, outside=1_000)
    return [(e.text, e.intent) for e in asked
            if e.intent == FALLBACK_INTENT or e.template not in left_out]


def fit_heard_intents(ctc_words: list[str], config: HeardIntentsConfig = DEFAULTS,
                      exclude_templates: frozenset[int] = frozenset()) -> HeardIntents:
    """Fit the head on the domain's training questions and their misheard copies, whose
    wrong words are drawn from ``ctc_words`` (the ears' vocabulary)."""
    rng = np.random.default_rng(config.seed)
    asked = training_questions(config, exclude_templates)
    labels = sorted({intent for _, intent in asked})
    vocab = [w for w in ctc_words if not w.startswith("<")]
    rows = [(user_words(q), intent) for q, intent in asked]
    # the words and pairs of the questions themselves, and any word the ears know (a pair
    # a mishearing made up is noise: leaving it out keeps the head small)
    names = sorted({f for words, _ in rows for f in features(words)} | set(unigrams(vocab)))
    rows += [(_mishear(words, vocab, rng, config), intent)
             for words, intent in rows for _ in range(config.noisy_copies)]
    index = {name: i for i, name in enumerate(names)}
    read = [([index[f] for f in features(words) if f in index], intent)
            for words, intent in rows]
    read = [(ids, intent) for ids, intent in read if ids]  # a copy with every word lost
    feats = [ids for ids, _ in read]
    flat = torch.tensor([i for fs in feats for i in fs])
    offsets = torch.tensor([0, *np.cumsum([len(fs) for fs in feats[:-1]])])
    target = torch.tensor([labels.index(intent) for _, intent in read])
    counts = torch.bincount(target, minlength=len(labels)).float()
    balance = counts.sum() / counts / len(labels)  # every intent weighs the same
    weight = torch.zeros(len(names), len(labels), requires_grad=True)
    bias = torch.zeros(len(labels), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=config.lr)
    for _ in range(config.epochs):
        optimizer.zero_grad()
        logits = torch.nn.functional.embedding_bag(flat, weight, offsets, mode="sum") + bias
        loss = torch.nn.functional.cross_entropy(logits, target, weight=balance)
        (loss + config.l2 * weight.square().sum()).backward()
        optimizer.step()
    answers = {i["id"]: i["answer"] for i in load_domain()["intents"] if i["id"] in labels}
    return HeardIntents(names, labels, weight.detach(), bias.detach(), answers, config)


def _mishear(words: list[str], vocab: list[str], rng: np.random.Generator,
             config: HeardIntentsConfig) -> list[str]:
    out = []
    for word in words:
        draw = rng.random()
        if draw < config.drop:
            continue
        out.append(vocab[rng.integers(len(vocab))] if draw < config.drop + config.replace
                   else word)
        if rng.random() < config.insert:
            out.append(vocab[rng.integers(len(vocab))])
    return out


def save_heard_intents(head: HeardIntents, folder: str | Path) -> Path:
    """``FOLDER/heard_intents.safetensors``: the weights in float16, the rest as metadata."""
    from safetensors.torch import save_file

    path = Path(folder) / FILENAME
    meta = {"names": head.names, "labels": head.labels, "answers": head.answers,
            "config": asdict(head.config)}
    save_file({"weight": head.weight.half().contiguous(), "bias": head.bias.half()}, str(path),
              metadata={"heard_intents": json.dumps(meta)})
    return path


def load_heard_intents(folder: str | Path) -> HeardIntents | None:
    """The head saved in a student's folder, or None if it has none."""
    from safetensors import safe_open

    path = Path(folder) / FILENAME
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["heard_intents"])
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    return HeardIntents(meta["names"], meta["labels"], weight, bias, meta["answers"],
                        HeardIntentsConfig(**meta["config"]))
