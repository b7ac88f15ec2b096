"""Text metrics shared by the evaluations: word error rate on normalized text.

Whisper writes numbers as digits ("1.8", "-14.4", "384,000 km", "H2O") where the
answers spell them out ("one point eight", "minus fourteen point four", "three hundred
eighty four thousand kilometers", "H two O"). ``normalize_for_wer`` brings both to one
form, so the judge and the WER count what was said, not how Whisper formats it.
"""

from __future__ import annotations

import re

from voxloop.distill.teachers.domain.text import normalize

# Unit abbreviations Whisper writes, as the answers say them.
_UNITS = {"km": "kilometers", "cm": "centimeters", "mm": "millimeters", "kg": "kilograms",
          "kms": "kilometers", "cms": "centimeters", "mms": "millimeters", "kgs": "kilograms",
          "lb": "pounds", "lbs": "pounds", "ft": "feet", "mph": "miles per hour",
          "kph": "kilometers per hour", "hrs": "hours", "mins": "minutes"}
_DEGREE_SCALES = {"c": "celsius", "f": "fahrenheit"}


def normalize_for_wer(text: str) -> str:
    """Lowercase, no punctuation, numbers as digits: "Seven." and "7" count as equal,
    and so do "one point eight" and "1.8", "minus 4" and "-4", "H two O" and "H2O",
    "km" and "kilometers"."""
    # a sign, not a range: "-6", and glued to a word as Whisper writes "is minus 7" ("is-7");
    # a lone letter before it is spelling ("H-2-O")
    text = re.sub(r"(?<![\w.])-(?=\d)|(?<=[a-zA-Z]{2})-(?=\d)", " minus ", text)
    # "h2o" -> "h 2 o"; a decimal like "1.8" stays one token
    text = " ".join(re.findall(r"\d+(?:\.\d+)?|[a-z]+", normalize(text)))
    # spoken decimals come digit by digit: "0 point 2 8" -> "0.28"
    text = re.sub(r"(?<!\S)(\d+) point((?: \d)+)(?!\S)",
                  lambda m: f"{m[1]}.{m[2].replace(' ', '')}", text)
    text = re.sub(r"(?<=\bdegrees )([cf])(?!\S)", lambda m: _DEGREE_SCALES[m[1]], text)
    return " ".join(_UNITS.get(word, word) for word in text.split())


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (total edits / total reference words) after ``normalize_for_wer``."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_for_wer(r) for r in references]
    hyps = [normalize_for_wer(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        raise ValueError("every reference is empty")
    out = jiwer.process_words([r for r, _ in pairs], [h if h else "<empty>" for _, h in pairs])
    edits = out.substitutions + out.deletions + out.insertions
    return edits / sum(len(r.split()) for r, _ in pairs)
