"""The documented domain (domain.json) and the questions it contains.

``load_domain()`` reads the data once. ``examples()`` lists questions with the
intent they belong to: every fixed phrasing, and templates of the
compositional intents filled with slot values drawn from a seeded generator,
or with every slot value the domain has (``fills_per_template=ALL_FILLS``).
``dev_examples()`` lists the dev phrasings (dev_phrasings.json): other ways to ask, written
to choose models by and never trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import numpy as np

FALLBACK_INTENT = "fallback"  # the intent of the domain's polite "I can only help with ..."
ALL_FILLS = 0  # fills_per_template: every slot value of the domain, in a fixed order
MAX_OPERAND = 20  # arithmetic on whole numbers 0..20; the second operand is never 0
MAX_CONVERT = 20  # conversions of 1..20 units


@dataclass(frozen=True)
class Example:
    intent: str
    text: str
    template: int  # index of the phrasing/template within its intent
    slots: tuple[tuple[str, str], ...] = ()


@lru_cache(maxsize=1)
def load_domain() -> dict:
    return json.loads(files("voxloop.distill.teachers.domain").joinpath("domain.json").read_text())


def _convert_slots(conv: dict, n: int) -> dict[str, str]:
    units = load_domain()["units"]
    return {"n": str(n), "from": units[conv["from"]]["plural" if n != 1 else "singular"],
            "to": units[conv["to"]]["plural"]}


def _slot_values(kind: str, rng: np.random.Generator) -> dict[str, str]:
    domain = load_domain()
    if kind == "arithmetic":
        a, b = (int(x) for x in rng.integers(0, MAX_OPERAND + 1, size=2))
        return {"a": str(a), "b": str(max(b, 1))}
    if kind == "capital":
        return {"country": str(rng.choice(sorted(domain["capitals"])))}
    if kind == "spell":
        return {"word": str(rng.choice(domain["spell_words"]))}
    if kind == "next_day":
        return {"day": str(rng.choice(domain["days"]))}
    if kind == "convert":
        conv = domain["conversions"][int(rng.integers(len(domain["conversions"])))]
        return _convert_slots(conv, int(rng.integers(1, MAX_CONVERT + 1)))
    raise ValueError(f"unknown compositional kind {kind!r}")


def all_slot_values(kind: str) -> list[dict[str, str]]:
    """Every slot filling of a compositional kind, in a fixed order (what the
    random draws of ``_slot_values`` range over)."""
    domain = load_domain()
    if kind == "arithmetic":
        return [{"a": str(a), "b": str(b)} for a in range(MAX_OPERAND + 1)
                for b in range(1, MAX_OPERAND + 1)]
    if kind == "capital":
        return [{"country": c} for c in sorted(domain["capitals"])]
    if kind == "spell":
        return [{"word": w} for w in domain["spell_words"]]
    if kind == "next_day":
        return [{"day": d} for d in domain["days"]]
    if kind == "convert":
        return [_convert_slots(conv, n) for conv in domain["conversions"]
                for n in range(1, MAX_CONVERT + 1)]
    raise ValueError(f"unknown compositional kind {kind!r}")


def examples(fills_per_template: int = 1, seed: int = 0, more: int = 0,
             outside: int = 0) -> list[Example]:
    """Every fixed phrasing once, and each compositional template filled
    ``fills_per_template`` times with seeded random slots, or with every slot
    value of its kind when ``fills_per_template`` is ``ALL_FILLS``. ``more``: also the first
    ``more`` of each intent's ``more_phrasings`` or ``more_templates`` (numbered after the
    others, so never the held-out one): other ways to ask, with the slot elsewhere, for
    training plans only; a plan made with fewer keeps its questions as more are written.
    ``outside``: also the first ``outside`` of the domain's ``outside_questions`` (first in
    the list), as the fallback intent's phrasings: their answer is the refusal."""
    domain = load_domain()
    rng = np.random.default_rng(seed)
    out = [Example(FALLBACK_INTENT, text, i)
           for i, text in enumerate(domain["outside_questions"][:outside])]
    out += [
        Example(intent["id"], text, i)
        for intent in domain["intents"]
        for i, text in enumerate(intent["phrasings"] + intent.get("more_phrasings", [])[:more])
    ]
    for intent in domain["compositional"]:
        every = all_slot_values(intent["kind"]) if fills_per_template == ALL_FILLS else None
        templates = intent["templates"] + intent.get("more_templates", [])[:more]
        for i, template in enumerate(templates):
            fills = every or (_slot_values(intent["kind"], rng) for _ in range(fills_per_template))
            for slots in fills:
                out.append(Example(intent["id"], template.format(**slots), i,
                                   tuple(sorted(slots.items()))))
    return out


def canonical_question(intent: str, slots: tuple[tuple[str, str], ...], text: str) -> str:
    """The question ``text`` (of ``intent``, filled with ``slots``) asks, said as its intent's
    first phrasing says it: what the intended answer is taken from, so a phrasing the
    scripted teacher's matcher does not know (a ``more_phrasings`` one: "if I take 3 from
    7 what is left") is still answered as its intent. A question of no known intent (the
    refusal's) is its own."""
    domain = load_domain()
    for intent_ in domain["intents"]:
        if intent_["id"] == intent:
            return intent_["phrasings"][0]
    for intent_ in domain["compositional"]:
        if intent_["id"] == intent and slots:
            return intent_["templates"][0].format(**dict(slots))
    return text


def dev_examples(per_phrasing: int, rng: np.random.Generator) -> list[Example]:
    """Each dev phrasing ``per_phrasing`` times, a composed one filled with a slot value
    drawn from every filling of its kind. The dev phrasings (``dev_phrasings.json``,
    ``{intent: [question, ...]}``) were written to choose models by: none is a phrasing or
    template of the domain (trained or held out) nor shares more than half its words with
    the held-out one, and no plan trains on them. ``template`` is the phrasing's index."""
    phrasings = json.loads(files("voxloop.distill.teachers.domain")
                           .joinpath("dev_phrasings.json").read_text())
    kinds = {i["id"]: i["kind"] for i in load_domain()["compositional"]}
    out = []
    for intent, texts in phrasings.items():
        for i, text in enumerate(texts):
            for _ in range(per_phrasing):
                if intent not in kinds:
                    out.append(Example(intent, text, i))
                    continue
                fills = all_slot_values(kinds[intent])
                slots = fills[int(rng.integers(len(fills)))]
                out.append(Example(intent, text.format(**slots), i, tuple(sorted(slots.items()))))
    return out


def more_phrasings_written() -> int:
    """How many more phrasings or templates every intent has (``examples(more=...)``)."""
    domain = load_domain()
    return min([len(i.get("more_phrasings", [])) for i in domain["intents"]]
               + [len(i.get("more_templates", [])) for i in domain["compositional"]])


def outside_questions_written() -> int:
    """How many questions outside the domain it lists (``examples(outside=...)``)."""
    return len(load_domain()["outside_questions"])


def intent_ids() -> list[str]:
    domain = load_domain()
    return [i["id"] for i in domain["intents"]] + [i["id"] for i in domain["compositional"]]
