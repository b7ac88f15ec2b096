"""Compositional skills: arithmetic, capitals, spelling, unit conversion, days.

Each skill reads normalized words (see ``text.normalize``) and returns a
``SkillAnswer`` or None when the question is not one of its kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from voxloop.distill.teachers.domain.data import FALLBACK_INTENT, load_domain
from voxloop.distill.teachers.domain.numbers import number_to_words
from voxloop.distill.teachers.domain.text import best_phrase, word_similarity

UNKNOWN_CAPITAL = "unknown_capital"  # the intent of an honest "I don't know the capital of X."


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


def _decimals(x: float) -> int:
    return 2 if abs(x) < 1 else 1


def _say(x: float) -> str:
    return number_to_words(x, decimals=_decimals(x))


def _about(x: float) -> str:
    """"about " where saying ``x`` rounds it ("zero point two five" is 1/4 exactly)."""
    return "" if round(x, _decimals(x)) == round(x, 6) else "about "


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
    approx = _about(result) if op == "divide" else ""
    text = f"{_say(a)} {verb} {_say(b)} is {approx}{_say(result)}."
    return SkillAnswer(op, text[0].upper() + text[1:])


_CAPITAL = ("capital", "capitals")
# How close a heard name must be to a country's ("frants" is France, 0.67). A country the
# domain has no capital for is found exactly in ``other_countries`` first, so "georgia"
# (0.71 from "nigeria") is not taken for Nigeria.
_COUNTRY_MATCH = 0.65
_PLACE_END = {"please", "now", "today", "again", "then"}


def _masked(words: list[str], keys: tuple[str, ...]) -> list[str]:
    """``words`` with those that sound like ``keys`` (alone or two joined, "cap atill")
    blanked, so that "capital" itself never names a country ("capital" ~ "italy")."""
    out = list(words)
    for i, w in enumerate(words):
        if any(word_similarity(w, k) >= 0.85 for k in keys):
            out[i] = "_"
        elif i + 1 < len(words) and any(word_similarity(w + words[i + 1], k) >= 0.85
                                         for k in keys):
            out[i] = out[i + 1] = "_"
    return out


def _best_place(masked: list[str], names: list[str],
                min_score: float) -> tuple[str, int, float] | None:
    """``best_phrase`` within the runs of words between blanks (never across one)."""
    runs, run = [], []
    for w in [*masked, "_"]:
        if w == "_":
            runs.append(run)
            run = []
        else:
            run.append(w)
    found = [f for r in runs if (f := best_phrase(r, names, min_score)) is not None]
    return max(found, key=lambda f: f[2], default=None)


def _asked_place(masked: list[str]) -> str:
    """What the capital is asked of, as said: the words after "capital ... of", or the
    word before "'s capital"; "" when the question names nothing."""
    at = masked.index("_")
    if "of" in masked[at:]:
        place = masked[masked.index("of", at) + 1:]
        while place and place[-1] in _PLACE_END:
            place = place[:-1]
        return " ".join(place)
    return masked[at - 2] if at >= 2 and masked[at - 1] == "s" else ""


def _display(place: str) -> str:
    return " ".join(w if w in ("the", "of", "and") else w.capitalize() for w in place.split())


def capital(words: list[str]) -> SkillAnswer | None:
    if not _has(words, _CAPITAL):
        return None
    domain = load_domain()
    place = _masked(words, _CAPITAL)
    known = _best_place(place, list(domain["capitals"]) + list(domain["country_aliases"]),
                        _COUNTRY_MATCH)
    other = _best_place(place, domain["other_countries"], 1.0)
    if other is not None and (known is None or known[2] < 1.0
                              or len(other[0].split()) > len(known[0].split())):
        asked = other[0]  # "north korea", not "korea"; "niger", not "nigeria"
    elif known is not None:
        country = domain["country_aliases"].get(known[0], known[0])
        display = country.title().replace(" Of ", " of ")
        return SkillAnswer("capital", f"The capital of {display} is {domain['capitals'][country]}.")
    else:
        asked = _asked_place(place)
        if not asked:  # "what is the capital": of nothing the domain can tell
            return SkillAnswer(FALLBACK_INTENT, domain["fallback"])
    return SkillAnswer(UNKNOWN_CAPITAL, domain["unknown_capital"].format(place=_display(asked)))


_SPELL_STOP = {"how", "do", "you", "spell", "spelled", "spelt", "spelling", "the", "word", "can",
               "is", "for", "me", "what", "of", "please", "say", "a", "it", "could", "would"}


def spell(words: list[str]) -> SkillAnswer | None:
    if not _has(words, ("spell", "spelled", "spelling", "spelt")):
        return None
    asked = " ".join(words).replace("letter by letter", " ").split()  # how, not what: "letter"
    candidates = [w for w in asked if w not in _SPELL_STOP and w.isalpha()]  # is a spell word
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
    approx = _about(result)
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
