"""The documented domain (domain.json) and the questions it contains.

``load_domain()`` reads the data once. ``examples()`` lists questions with the
intent they belong to: every fixed phrasing, and templates of the
compositional intents filled with slot values drawn from a seeded generator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import numpy as np


@dataclass(frozen=True)
class Example:
    intent: str
    text: str
    template: int  # index of the phrasing/template within its intent
    slots: tuple[tuple[str, str], ...] = ()


@lru_cache(maxsize=1)
def load_domain() -> dict:
    return json.loads(files("voxloop.distill.teachers.domain").joinpath("domain.json").read_text())


def _slot_values(kind: str, rng: np.random.Generator) -> dict[str, str]:
    domain = load_domain()
    if kind == "arithmetic":
        a, b = (int(x) for x in rng.integers(0, 21, size=2))
        return {"a": str(a), "b": str(max(b, 1))}
    if kind == "capital":
        return {"country": str(rng.choice(sorted(domain["capitals"])))}
    if kind == "spell":
        return {"word": str(rng.choice(domain["spell_words"]))}
    if kind == "next_day":
        return {"day": str(rng.choice(domain["days"]))}
    if kind == "convert":
        conv = domain["conversions"][int(rng.integers(len(domain["conversions"])))]
        units = domain["units"]
        n = int(rng.integers(1, 21))
        return {"n": str(n), "from": units[conv["from"]]["plural" if n != 1 else "singular"],
                "to": units[conv["to"]]["plural"]}
    raise ValueError(f"unknown compositional kind {kind!r}")


def examples(fills_per_template: int = 1, seed: int = 0) -> list[Example]:
    """Every fixed phrasing once, and each compositional template filled
    ``fills_per_template`` times with seeded random slots."""
    domain = load_domain()
    rng = np.random.default_rng(seed)
    out = [
        Example(intent["id"], text, i)
        for intent in domain["intents"]
        for i, text in enumerate(intent["phrasings"])
    ]
    for intent in domain["compositional"]:
        for i, template in enumerate(intent["templates"]):
            for _ in range(fills_per_template):
                slots = _slot_values(intent["kind"], rng)
                out.append(Example(intent["id"], template.format(**slots), i,
                                   tuple(sorted(slots.items()))))
    return out


def intent_ids() -> list[str]:
    domain = load_domain()
    return [i["id"] for i in domain["intents"]] + [i["id"] for i in domain["compositional"]]
