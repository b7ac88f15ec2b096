"""The held-out questions the benches speak: a balanced draw from the dataset plan's
held-out splits, synthesized by the offline TTS voices."""

from __future__ import annotations

from itertools import zip_longest

import numpy as np

from voxloop.client.files import speech_end_sample
from voxloop.realtime.wire.protocol import WIRE_RATE_HZ


def held_out_questions(count: int) -> list[tuple[str, str, np.ndarray]]:
    """``(text, voice, audio [T] at 24 kHz)`` of ``count`` held-out questions
    (``held_out_items``), synthesized now (offline TTS)."""
    from voxloop.distill.data.plan import SynthSettings, plan

    return [(i.prompt_text, i.user_voice, spoken(i.prompt_text, i.user_voice))
            for i in held_out_items(plan(SynthSettings()), count)]


def held_out_items(items: list, count: int) -> list:
    """``count`` of a dataset plan's held-out ``items``: the held-out voices' questions and
    the held-out phrasings' in turn, half each; every held-out voice as often as the others
    (the plan lists each voice's questions together: the first ones would be one voice);
    within each split distinct intents, drawn evenly over the domain's order, before any
    intent comes again."""
    phrasings = distinct_intents([i for i in items if i.split == "heldout_phrasing"])
    in_voices = voices_in_turn([i for i in items if i.split == "heldout_voice"],
                               max(count - len(phrasings), (count + 1) // 2))
    picked = [in_voices, evenly(phrasings, count - len(in_voices))]
    return [item for pair in zip_longest(*picked) for item in pair if item is not None]


def voices_in_turn(items: list, count: int) -> list:
    """``count`` of ``items`` (at most all): the k-th said by voice k mod V (the next voice
    once one has said all its questions), its intent the k-th of ``count`` spread evenly over
    the intents in order (round after round when ``count`` is more than the intents), or
    the nearest intent that voice has still to say."""
    voices = list(dict.fromkeys(i.user_voice for i in items))
    intents = list(dict.fromkeys(i.intent for i in items))
    left = {v: {intent: [] for intent in intents} for v in voices}
    for item in items:
        left[item.user_voice][item.intent].append(item)
    picked: list = []
    for k in range(min(count, len(items))):
        turn, q = divmod(k, len(intents))
        j = q * len(intents) // min(len(intents), count - turn * len(intents))
        voice = next(left[v] for n in range(len(voices))
                     if any(left[v := voices[(k + n) % len(voices)]].values()))
        nearest = min((abs(n - j), n) for n, intent in enumerate(intents) if voice[intent])[1]
        picked.append(voice[intents[nearest]].pop(0))
    return picked


def distinct_intents(items: list) -> list:
    """``items`` in order, each intent's first and then its later ones (round after round)."""
    rounds: list[list] = []
    counts: dict[str, int] = {}
    for item in items:
        k = counts[item.intent] = counts.get(item.intent, -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(item)
    return [item for one_round in rounds for item in one_round]


def evenly(items: list, count: int) -> list:
    """``count`` of ``items`` (at most all), spread evenly from the first on."""
    count = min(count, len(items))
    return [items[k * len(items) // count] for k in range(count)] if count else []


def spoken(text: str, voice: str) -> np.ndarray:
    """``text`` by the TTS ``voice`` at 24 kHz, from its first loud sample on."""
    from voxloop.audio import resample
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize(text, voice)
    audio = resample(samples, rate_hz, WIRE_RATE_HZ)
    start = len(audio) - speech_end_sample(audio[::-1])
    return audio[start:]
