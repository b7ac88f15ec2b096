"""The scripted assistant: deterministic answers over the documented domain.

Questions are normalized (``text.normalize``), tried against the compositional
skills, then scored against every documented phrasing of the fixed intents
with an IDF-weighted fuzzy word overlap, so missing words, plurals and small
ASR misspellings still land on the right intent. Below ``min_score`` the
answer is the polite fallback, and so it is for a weak match: a question whose
subject is not the intent's ("how many legs does a *centipede* have" is not
the dog's question with a typo). An unknown slot of a skill gets an honest
answer ("I don't know the capital of Mongolia.").
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from rapidfuzz import fuzz

from voxloop.distill.teachers.domain.data import FALLBACK_INTENT, load_domain
from voxloop.distill.teachers.domain.skills import SKILLS
from voxloop.distill.teachers.domain.text import normalize, word_similarity

_STOPWORDS = {"a", "an", "the", "is", "are", "of", "to", "in", "on", "me", "please", "can", "you",
              "do", "does", "i", "it", "that", "this", "for", "be", "and", "there", "so", "hey",
              "um", "uh", "well", "just", "tell", "what", "how", "which", "voxloop", "we", "will",
              "at", "if", "with", "as", "but", "by", "from", "into", "or", "not", "would"}
_MIN_WORD_SIMILARITY = 0.75  # weaker word matches count as no match
# Two intents are siblings when this many of their phrasings, index by index, differ in one
# or two words ("how many legs does a dog have" / "... a spider have"): those words are
# the intents' subjects.
_SIBLING_PHRASINGS = 8
# A heard word this close to a missing subject word is taken for it misheard ("date" for
# "day"), not for another subject.
_MISHEARD_SUBJECT = 0.5


@dataclass(frozen=True)
class Match:
    intent: str
    answer: str
    score: float  # 1.0 for a compositional skill; overlap F-score for fixed intents


def _content(words: list[str]) -> list[str]:
    """Words that carry meaning; all words when fewer than two do ("who are you")."""
    content = [w for w in words if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]
    return content if len(content) >= 2 else list(words)


@dataclass(frozen=True)
class _Phrasing:
    intent: str
    words: tuple[str, ...]


@dataclass(frozen=True)
class _Index:
    phrasings: tuple[_Phrasing, ...]
    idf: dict[str, float]  # over intents, for every word some phrasing uses
    unknown_weight: float  # a word no phrasing uses weighs as much as the rarest one
    vocab: tuple[str, ...]  # the words of idf, in a fixed order
    columns: np.ndarray  # int [P, L]: phrasing p's words as vocab indices, padded with 0
    present: np.ndarray  # bool [P, L]: which columns are words, not padding
    word_idf: np.ndarray  # float [P, L]: idf of each word of each phrasing, 0 for padding
    subjects: dict[str, frozenset[str]]  # intent -> the words that tell it from its siblings

    def weight(self, word: str) -> float:
        return self.idf.get(word, self.unknown_weight)


@lru_cache(maxsize=1)
def _index() -> _Index:
    domain = load_domain()
    phrasings, df = [], Counter()
    for intent in domain["intents"]:
        seen = set()
        for text in intent["phrasings"]:
            words = tuple(_content(normalize(text).split()))
            phrasings.append(_Phrasing(intent["id"], words))
            seen.update(words)
        df.update(seen)
    n = len(domain["intents"])
    idf = {w: math.log(1.0 + n / c) for w, c in df.items()}
    vocab = tuple(idf)
    column = {w: i for i, w in enumerate(vocab)}
    width = max(len(p.words) for p in phrasings)
    columns = np.zeros((len(phrasings), width), np.int64)
    present = np.zeros((len(phrasings), width), bool)
    for row, p in enumerate(phrasings):
        columns[row, :len(p.words)] = [column[w] for w in p.words]
        present[row, :len(p.words)] = True
    word_idf = np.where(present, np.array([idf[w] for w in vocab])[columns], 0.0)
    return _Index(tuple(phrasings), idf, max(idf.values()), vocab, columns, present, word_idf,
                  _subjects(domain["intents"]))


def _subjects(intents: list[dict]) -> dict[str, frozenset[str]]:
    """Each intent's subject words: where its phrasings differ from a sibling's."""
    said = {i["id"]: [normalize(text).split() for text in i["phrasings"]] for i in intents}
    subjects: dict[str, set[str]] = {}
    for a, phrasings_a in said.items():
        for b, phrasings_b in said.items():
            diffs = []
            for wa, wb in zip(phrasings_a, phrasings_b, strict=False):
                if a != b and len(wa) == len(wb):
                    diff = [x for x, y in zip(wa, wb, strict=True)
                            if x != y and x not in _STOPWORDS]
                    if 0 < len(diff) <= 2 and len(diff) < len(wa):
                        diffs.append(diff)
            if len(diffs) >= _SIBLING_PHRASINGS:
                subjects.setdefault(a, set()).update(w for d in diffs for w in d)
    return {intent: frozenset(words) for intent, words in subjects.items()}


def _similarity(a: str, b: str) -> float:
    s = word_similarity(a, b)
    return s if s >= _MIN_WORD_SIMILARITY else 0.0


@dataclass(frozen=True)
class Fit:
    """How well normalized words fit their best fixed intent."""

    intent: str
    score: float  # IDF-weighted overlap F-score in 0..1
    missing: tuple[str, ...] = ()  # words of the best phrasing the input lacks
    extra: tuple[str, ...] = ()  # content words of the input the phrasing lacks

    def other_subject(self) -> bool:
        """Is the intent's subject replaced by another ("how many legs does a *cat* have"
        against "... a *dog* have")? Then the question is about something else; a word
        that resembles the missing one is taken for it misheard ("date" for "day")."""
        subjects = _index().subjects.get(self.intent, frozenset())
        missing = [w for w in self.missing if w in subjects]
        return any(all(fuzz.ratio(w, m) < 100 * _MISHEARD_SUBJECT for m in missing)
                   for w in self.extra) if missing else False


def score_fixed(words: list[str]) -> Fit:
    """Best fixed intent for normalized ``words`` and its F-score in 0..1.

    Recall: IDF-weighted share of the phrasing's words found in the input;
    precision: the same for the input's words found in the phrasing. All
    phrasings are scored at once: ``sims[h, v]`` is heard word h against vocab word v.
    """
    index = _index()
    content = _content(words)
    # ASR splits words ("hex again", "in sets"): joined neighbours may match a phrasing word.
    joined = [a + b for a, b in zip(words, words[1:], strict=False)]
    heard = content + joined
    if not content:
        return Fit(FALLBACK_INTENT, 0.0)
    sims = np.array([[_similarity(w, v) for v in index.vocab] for w in heard])  # [H, V]
    found = sims.max(axis=0)[index.columns]  # [P, L]: each phrasing word's best match
    hit = (index.word_idf * found).sum(axis=1)  # [P]
    best_in_phrasing = np.where(index.present, sims[:len(content)][:, index.columns],
                                0.0).max(axis=2)  # [C, P]
    weights = np.array([index.weight(w) for w in content])  # [C]
    recall = hit / index.word_idf.sum(axis=1)
    precision = weights @ best_in_phrasing / weights.sum()
    total = recall + precision
    f = np.divide(2 * recall * precision, total, out=np.zeros_like(total), where=total > 0)
    best = int(np.argmax(f))
    if f[best] <= 0.0:
        return Fit(FALLBACK_INTENT, 0.0)
    phrasing = index.phrasings[best]
    missing = tuple(w for w, s in zip(phrasing.words, found[best], strict=False) if s == 0.0)
    unmatched = {w for w, s in zip(content, best_in_phrasing[:, best], strict=True) if s == 0.0}
    joined_hit = np.where(index.present[best], sims[len(content):][:, index.columns[best]],
                          0.0).max(axis=1, initial=0.0)  # [J]: "hex again" -> "hexagon"
    covered = {w for i, s in enumerate(joined_hit) if s > 0.0 and all(
        w in unmatched or w not in content for w in words[i:i + 2]) for w in words[i:i + 2]}
    extra = tuple(w for w in content if w in unmatched and w not in covered)
    return Fit(phrasing.intent, float(f[best]), missing, extra)


class ScriptedAssistant:
    """The default teacher LLM: same text in, same answer out; history is not used."""

    name = "scripted"

    def __init__(self, min_score: float = 0.6) -> None:
        self.min_score = min_score
        self._answers = {i["id"]: i["answer"] for i in load_domain()["intents"]}

    def match(self, text: str) -> Match:
        words = normalize(text).split()
        for skill in SKILLS:
            found = skill(words)
            if found is not None:
                return Match(found.intent, found.text, 1.0)
        fit = score_fixed(words)
        if fit.score < self.min_score or fit.other_subject():
            return Match(FALLBACK_INTENT, load_domain()["fallback"], fit.score)
        return Match(fit.intent, self._answers[fit.intent], fit.score)

    def reply(self, history: list[dict], text: str) -> str:
        return self.match(text).answer
