"""Compositional skills: arithmetic, capitals, spelling, unit conversion, days.

Each skill reads normalized words (see ``text.normalize``) and returns a
``SkillAnswer`` or None when the question is not one of its kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxloop.distill.teachers.domain.data import load_domain
from voxloop.distill.teachers.domain.numbers import number_to_words
from voxloop.distill.teachers.domain.text import best_phrase, word_similarity


@dataclass(frozen=True)
class SkillAnswer:
    intent: str
    text: str


def _numbers(words: list[str]) -> list[tuple[int, float]]:
    """(index, value) of every numeric word."""
    out = []
    for i, w in enumerate(words):
        try:
            out.append((i, float(w)))
        except ValueError:
            continue
    return out


def _has(words: list[str], keys: tuple[str, ...], min_score: float = 0.85) -> bool:
    """Does a word, or two neighbours joined ("capa tila"), sound like one of ``keys``?"""
    joined = [a + b for a, b in zip(words, words[1:], strict=False)]
    return any(word_similarity(w, k) >= min_score for w in words + joined for k in keys)


def _say(x: float) -> str:
    return number_to_words(x, decimals=2 if abs(x) < 1 else 1)


_OPERATORS = (
    ("add", ("plus", "add", "sum", "added")),
    ("subtract", ("minus", "subtract", "away", "less", "subtracted")),
    ("multiply", ("times", "multiply", "multiplied", "product")),
    ("divide", ("divided", "divide", "over")),
)


def _operands(words: list[str], keys: tuple[str, ...]) -> tuple[float, float]:
    """The two numbers an operator word applies to: around it ("7 plus 5") or after it
    ("add 7 and 5"); "subtract 3 from 9" and "3 less than 9" -> (9, 3)."""
    numbers = _numbers(words)
    joined = [a + b for a, b in zip(words, words[1:], strict=False)]  # "multi plied", as _has
    at = next((i for candidates in (words, joined) for i, w in enumerate(candidates)
               if any(word_similarity(w, k) >= 0.85 for k in keys)), 0)
    before = [n for n in numbers if n[0] < at]
    after = [n for n in numbers if n[0] > at]
    if before and after:
        pair = [before[-1], after[0]]
    elif len(after) >= 2:
        pair = after[:2]
    else:
        pair = numbers[:2]
    (ia, a), (ib, b) = pair
    between = words[ia:ib]
    return (b, a) if "from" in between or "than" in between else (a, b)


# Number words ASR writes as their homophones ("divide to by four").
_NUMBER_HOMOPHONES = {"to": "2", "too": "2", "for": "4", "won": "1", "ate": "8"}


def arithmetic(words: list[str]) -> SkillAnswer | None:
    found = next(((name, keys) for name, keys in _OPERATORS if _has(words, keys)), None)
    if found is None:
        return None
    if len(_numbers(words)) < 2:
        words = [_NUMBER_HOMOPHONES.get(w, w) for w in words]
        words = ["by" if w == "buy" else w for w in words]
        if len(_numbers(words)) < 2:
            return None
    op, keys = found
    a, b = _operands(words, keys)
    if op == "divide" and b == 0:
        return SkillAnswer("divide", "You can't divide by zero.")
    result = {"add": a + b, "subtract": a - b, "multiply": a * b,
              "divide": a / b if b else 0.0}[op]
    verb = {"add": "plus", "subtract": "minus", "multiply": "times", "divide": "divided by"}[op]
    approx = "about " if op == "divide" and round(result, 1) != result else ""
    text = f"{_say(a)} {verb} {_say(b)} is {approx}{_say(result)}."
    return SkillAnswer(op, text[0].upper() + text[1:])


def capital(words: list[str]) -> SkillAnswer | None:
    if not _has(words, ("capital", "capitals")):
        return None
    domain = load_domain()
    names = list(domain["capitals"]) + list(domain["country_aliases"])
    found = best_phrase(words, names, min_score=0.65)
    if found is None:
        return None
    country = domain["country_aliases"].get(found[0], found[0])
    display = country.title().replace(" Of ", " of ")
    return SkillAnswer("capital", f"The capital of {display} is {domain['capitals'][country]}.")


_SPELL_STOP = {"how", "do", "you", "spell", "spelled", "spelt", "spelling", "the", "word", "can",
               "is", "for", "me", "what", "of", "please", "say", "a", "it", "could", "would"}


def spell(words: list[str]) -> SkillAnswer | None:
    if not _has(words, ("spell", "spelled", "spelling", "spelt")):
        return None
    candidates = [w for w in words if w not in _SPELL_STOP and w.isalpha()]
    if not candidates:
        return None
    vocabulary = load_domain()["spell_words"]
    scored = [(word_similarity(c, v), v) for c in candidates for v in vocabulary]
    score, word = max(scored) if scored else (0.0, "")
    if score < 0.75:
        word = candidates[-1]
    letters = ", ".join(word.upper())
    return SkillAnswer("spell", f"{word.capitalize()} is spelled {letters}.")


def _unit_mentions(words: list[str]) -> list[tuple[int, str]]:
    """(word index, unit id) of each unit named in ``words``, in order."""
    units = load_domain()["units"]
    alias_to_unit = {a: uid for uid, u in units.items() for a in u["aliases"]}
    mentions, i = [], 0
    while i < len(words):
        for n in (2, 1):
            window = " ".join(words[i:i + n])
            if window in alias_to_unit:
                mentions.append((i, alias_to_unit[window]))
                i += n
                break
        else:
            hit = best_phrase(words[i:i + 1], [a for a in alias_to_unit if len(a) >= 5], 0.85)
            if hit is not None:
                mentions.append((i, alias_to_unit[hit[0]]))
            i += 1
    return mentions


def convert(words: list[str]) -> SkillAnswer | None:
    numbers = _numbers(words)
    mentions = _unit_mentions(words)
    if not numbers or len({u for _, u in mentions}) < 2:
        return None
    index, value = numbers[0]
    after = [m for m in mentions if m[0] > index]
    if not after:
        return None
    source = after[0][1]
    target = next((u for _, u in mentions if u != source), None)
    domain = load_domain()
    rule = next((c for c in domain["conversions"]
                 if c["from"] == source and c["to"] == target), None)
    units = domain["units"]
    if rule is None:
        return SkillAnswer("convert", f"Sorry, I can't convert {units[source]['plural']} "
                                      f"to {units[target]['plural']}.")
    result = value * rule["scale"] + rule["offset"]
    approx = "" if round(result, 1) == round(result, 6) else "about "
    src_name = units[source]["singular" if value == 1 else "plural"]
    dst_name = units[target]["singular" if round(result, 1) == 1 else "plural"]
    text = f"{_say(value)} {src_name} is {approx}{_say(result)} {dst_name}."
    return SkillAnswer("convert", text[0].upper() + text[1:])


def next_day(words: list[str]) -> SkillAnswer | None:
    if not _has(words, ("after", "follows", "followed", "next", "following", "tomorrow")):
        return None
    days = load_domain()["days"]
    found = best_phrase(words, days, min_score=0.8)
    if found is None:
        return None
    following = days[(days.index(found[0]) + 1) % 7]
    return SkillAnswer("next_day", f"After {found[0].capitalize()} comes {following.capitalize()}.")


SKILLS = (arithmetic, convert, capital, spell, next_day)
