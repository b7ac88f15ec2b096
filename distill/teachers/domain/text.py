"""Text normalization and fuzzy word matching that tolerate ASR noise."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from rapidfuzz import fuzz

from voxloop.distill.teachers.domain.numbers import words_to_digits

_CONTRACTIONS = {"what's": "what is", "how's": "how is", "it's": "it is", "who's": "who is",
                 "where's": "where is", "that's": "that is", "i'm": "i am", "can't": "cannot",
                 "don't": "do not", "let's": "let us", "there's": "there is", "'ll": " will",
                 "'re": " are", "'ve": " have", "'d": " would", "doesn't": "does not"}
_SYMBOLS = {"+": " plus ", "×": " times ", "*": " times ", "÷": " divided by ",
            "/": " divided by ", "=": " ", "°": " degrees ", "%": " percent "}
# Words ASR confuses in this domain, mapped to the word the domain uses.
_HOMOPHONES = {"capitol": "capital", "pluss": "plus", "devided": "divided", "farenheit":
               "fahrenheit", "colour": "color", "colours": "colors", "metre": "meter",
               "metres": "meters", "kilometre": "kilometer", "kilometres": "kilometers",
               "centimetre": "centimeter", "centimetres": "centimeters", "okay": "ok",
               "jokes": "joke", "x": "times"}


def normalize(text: str) -> str:
    """Lowercase, expand contractions and symbols, spell numbers as digits.

    "What's 7 + five?" -> "what is 7 plus 5".
    """
    text = unicodedata.normalize("NFKD", text.lower().replace("’", "'"))
    text = "".join(c for c in text if not unicodedata.combining(c))  # "brasília" -> "brasilia"
    for short, full in _CONTRACTIONS.items():
        text = text.replace(short, full)
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)  # twenty-one
    text = re.sub(r"(?<=\d)\s*-\s*(?=\d)", " minus ", text)
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = re.sub(r"[^a-z0-9. ]+", " ", text)
    text = re.sub(r"\.(?!\d)", " ", text)
    words = [_HOMOPHONES.get(w, w) for w in text.split()]
    return words_to_digits(" ".join(words))


@lru_cache(maxsize=65536)
def word_similarity(a: str, b: str) -> float:
    """0..1 similarity of two words; plurals and small typos score high."""
    if a == b:
        return 1.0
    if a.rstrip("s") == b.rstrip("s"):
        return 0.95
    if min(len(a), len(b)) < 4:
        return 0.0
    return fuzz.ratio(a, b) / 100.0


def best_phrase(words: list[str], phrases: list[str], min_score: float = 0.8,
                ) -> tuple[str, int, float] | None:
    """Find the phrase (1-3 words) that best matches a run of ``words``.

    Returns ``(phrase, start_index, score)`` or None if nothing reaches ``min_score``.
    """
    best: tuple[str, int, float] | None = None
    for phrase in phrases:
        n = len(phrase.split())
        for start in range(0, len(words) - n + 1):
            window = " ".join(words[start:start + n])
            score = 1.0 if window == phrase else (
                fuzz.ratio(window, phrase) / 100.0 if len(phrase) >= 4 else 0.0)
            if score >= min_score and (best is None or score > best[2]):
                best = (phrase, start, score)
    return best
