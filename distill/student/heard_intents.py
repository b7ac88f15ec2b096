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

Where the head is sure (``min_prob``) of a fixed answer the student did not write and
all but rules out the student's own (``max_own_prob``), and the student's words score at
most ``max_logprob`` (0 by default: however sure it is), the student says the head's answer
instead (:mod:`generate`). The head never writes a composed answer (numbers, countries:
the words carry those); where it reads a composed question, the student's words lean to
the slot values it heard (``slots``, ``slot_bonus``).

    head = fit_heard_intents(vocab["ctc"])        # ~10 s
    head.fixed_answer("tell me the freezing planet of water")  # -> "Water freezes at ..."
    save_heard_intents(head, folder); load_heard_intents(folder)
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.student.config import HeardIntentsConfig
from voxloop.distill.student.vocab import answer_words, frame_words, user_words
from voxloop.distill.teachers.domain.data import (
    FALLBACK_INTENT,
    MAX_CONVERT,
    MAX_OPERAND,
    examples,
    load_domain,
)
from voxloop.distill.teachers.domain.numbers import int_to_words
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
        self.refusal = load_domain()["fallback"]
        self._said = {tuple(answer_words(text)): label for label, text in answers.items()}
        self._said[tuple(answer_words(self.refusal))] = FALLBACK_INTENT
        self._composed = [i for i, label in enumerate(labels)
                          if label not in answers and label != FALLBACK_INTENT]

    def probabilities(self, heard: str, audio: np.ndarray | None = None) -> np.ndarray | None:
        """``[L]``: the head's probability of each label; None if it knows no feature and
        has no ``audio``: the log-probabilities ``[L]`` the audio intents head read from the
        turn's sound (``audio_logprobs``), which multiply the words' raised to the config's
        ``audio_weight``. Where it knows no word, the sound alone (not the words' prior)."""
        ids = [self._index[f] for f in features(user_words(heard)) if f in self._index]
        if not ids and audio is None:
            return None
        logits = torch.log_softmax(self.weight[ids].sum(0) + self.bias, -1) if ids \
            else torch.zeros(len(self.labels))
        if audio is not None:
            logits = logits + self.config.audio_weight * torch.from_numpy(audio).float()
        return torch.softmax(logits, -1).numpy()

    def audio_logprobs(self, labels: tuple[str, ...], logprobs: np.ndarray) -> np.ndarray:
        """An audio head's log-probabilities over its ``labels`` as ``[L]`` over this head's
        (a label it lacks gets the uniform one's: it neither favours nor rules it out)."""
        index = {label: i for i, label in enumerate(labels)}
        neutral = -float(np.log(len(labels)))
        return np.array([logprobs[index[label]] if label in index else neutral
                         for label in self.labels], np.float32)

    def read(self, heard: str, audio: np.ndarray | None = None) -> tuple[str | None, float]:
        """The likeliest intent's fixed answer (the refusal for a question outside the
        domain, where the config's ``refuse`` and the sound was read too: the words alone
        were never measured naming it; None for a composed one, or where the head knows no
        word and has no sound) and the head's probability of that intent (0 then)."""
        probs = self.probabilities(heard, audio)
        if probs is None:
            return None, 0.0
        label = self.labels[int(probs.argmax())]
        refused = label == FALLBACK_INTENT and self.config.refuse and audio is not None
        return self.answers.get(label, self.refusal if refused else None), float(probs.max())

    def likeliest_answers(self, heard: str, top: int, audio: np.ndarray | None = None
                          ) -> list[tuple[str, float]]:
        """The fixed answers of the ``top`` likeliest intents (composed ones skipped), each
        with the head's probability of its intent; none where it knows no word and has no
        sound."""
        probs = self.probabilities(heard, audio)
        if probs is None:
            return []
        return [(self.answers[self.labels[i]], float(probs[i])) for i in np.argsort(-probs)[:top]
                if self.labels[i] in self.answers]

    def answer_prob(self, heard: str, answer: str, audio: np.ndarray | None = None) -> float:
        """The head's probability that the heard words ask for ``answer``: for a fixed
        answer (or the refusal) its intent's, for any other words the composed intents'
        together (1 where it knows no word and has no sound: nothing rules it out)."""
        probs = self.probabilities(heard, audio)
        if probs is None:
            return 1.0
        label = self._said.get(tuple(answer_words(answer)))
        return float(probs[self.labels.index(label)]) if label in self.labels \
            else float(probs[self._composed].sum())

    def slots(self, heard: str, audio: np.ndarray | None = None) -> Counter[str]:
        """The answer words of the slot values heard (``slot_words``), each as often as
        heard, where the head's likeliest intent is a composed one (arithmetic, a capital,
        a spelling, a conversion, a day); else none."""
        probs = self.probabilities(heard, audio)
        if probs is None or int(probs.argmax()) not in self._composed:
            return Counter()
        said = slot_words()
        return Counter(w for heard_word in user_words(heard) for w in said.get(heard_word, ()))

    def fixed_answer(self, heard: str, min_prob: float | None = None,
                     audio: np.ndarray | None = None) -> str | None:
        """The fixed answer the heard words point to, where the head gives it at least
        ``min_prob`` (None: the config's ``min_prob``; 0: its likeliest intent's answer)."""
        answer, prob = self.read(heard, audio)
        return answer if prob >= (self.config.min_prob if min_prob is None else min_prob) \
            else None


@lru_cache(maxsize=1)
def slot_words() -> dict[str, tuple[str, ...]]:
    """A heard word that names a slot value of the domain (a number the composed kinds take,
    a country, a word to spell, a unit, a day) -> how the answer writes it ("17" ->
    ("seventeen",)); a name of several words is its words. Never a word the composed
    questions themselves use ("and" of "antigua and barbuda", "day" of the units: they are
    heard where they name no slot) nor a letter (spelled answers are letters)."""
    domain = load_domain()
    numbers = {str(n): tuple(int_to_words(n).split())
               for n in range(max(MAX_OPERAND, MAX_CONVERT) + 1)}
    names = [answer_words(name) for name in [
        *domain["capitals"], *domain["other_countries"], *domain["spell_words"],
        *domain["days"], *(a for u in domain["units"].values() for a in u["aliases"])]]
    asked = {w for i in domain["compositional"]
             for t in i["templates"] + i.get("more_templates", []) for w in frame_words(t)}
    return {w: (w,) for name in names for w in name if len(w) > 1 and w not in asked} \
        | numbers


@lru_cache(maxsize=1)
def unit_names() -> dict[str, frozenset[str]]:
    """Each word of the units' names -> the units it names ("inches" -> {"inch"},
    "degrees" -> {"celsius", "fahrenheit"})."""
    names: dict[str, set[str]] = {}
    for unit, entry in load_domain()["units"].items():
        for word in {w for alias in entry["aliases"] for w in answer_words(alias)}:
            names.setdefault(word, set()).add(unit)
    return {w: frozenset(units) for w, units in names.items()}


@lru_cache(maxsize=1)
def unit_words() -> frozenset[str]:
    """The slot words that name one unit ("inches"; not "degrees", which names two)."""
    return frozenset(w for w, units in unit_names().items() if len(units) == 1
                     and w in slot_words())


def number_unit(heard: str) -> str | None:
    """The answer word of the unit heard with the question's first number ("how much is 2
    centimeters in inches" -> "centimeters"; "20 degrees celsius" -> "celsius": a word of
    several units passed over), which a conversion's answer says first, with its number;
    None where the number comes without one."""
    words = user_words(heard)
    first = next((i for i, w in enumerate(words) if w.isdigit()), None)
    if first is None:
        return None
    after = [w for w in words[first + 1:first + 3] if len(unit_names().get(w, ())) < 2]
    return slot_words()[after[0]][0] if after and after[0] in unit_words() else None


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
