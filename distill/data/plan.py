"""What the synth job makes: its settings, every example it plans, and the shards.

The plan is a pure function of the settings and of the voices installed here:
the same settings give the same example ids, splits, augmentations and shards,
so a restarted job or another rank agrees on what each shard holds.

Splits share the codec corpus's held-out material (``HELDOUT_VOICES`` and
``HELDOUT_TEMPLATE`` from ``teachers.heldout``), so codec and student are measured
on the same unseen voices and phrasings:

- ``heldout_voice``: phrasings of every intent in turn, spoken by a held-out voice;
- ``heldout_phrasing``: the held-out phrasing of every intent (a few slot
  fillings of each compositional one), by training voices;
- ``valid``: a hashed share of the training plan (same distribution as train);
- ``train``: the rest. No held-out voice or phrasing is ever in train or valid, nor a
  held-out voice's speaker under another name (``SAME_SPEAKER_AS_HELDOUT``).

Training prompts are every other phrasing with every slot filling (by default),
each spoken by ``voices_per_prompt`` training voices, or by more where an intent
has few prompts (a fixed intent's eleven phrasings) so that it still gets
``min_turns_per_intent`` turns. Voices are drawn with weight 1/sqrt(voices of
their backend), so espeak-ng's hundred variants do not drown the other
synthesizers. Only turns of ``asr_splits`` run the teacher's ASR and LLM on the
audio; the others store the intended text and answer (what the student learns).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from voxloop.distill.data.augment import draw_augmentation
from voxloop.distill.data.dataset import SPLITS, shard_name
from voxloop.distill.teachers.domain.data import ALL_FILLS
from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE, HELDOUT_VOICES, trainable
from voxloop.errors import VoxloopError
from voxloop.models import DEFAULT_CODEC

WORK_ORDER = ("heldout_voice", "heldout_phrasing", "valid", "train")


@dataclass(frozen=True)
class SynthSettings:
    """The synthetic distillation dataset job (``voxloop distill synth``)."""

    out: str = field(default="data/distill-v2", metadata={"help": "dataset folder"})
    fills_per_template: int = field(default=ALL_FILLS, metadata={
        "help": f"slot fillings per compositional template; {ALL_FILLS}: every slot value"})
    voices_per_prompt: int = field(default=1, metadata={
        "help": "training voices that speak each training prompt (at least)"})
    min_turns_per_intent: int = field(default=200, metadata={
        "help": "more voices speak an intent's prompts until it has this many training turns"})
    heldout_phrasing_voices: int = field(default=2, metadata={
        "help": "training voices that speak each held-out phrasing"})
    heldout_fills_per_template: int = field(default=8, metadata={
        "help": "slot fillings of each compositional intent's held-out template"})
    heldout_voice_prompts: int = field(default=80, metadata={
        "help": "prompts spoken by each held-out voice (every intent in turn)"})
    valid_fraction: float = field(default=0.03, metadata={
        "help": "share of the training plan kept for validation"})
    augment_fraction: float = field(default=0.7, metadata={
        "help": "share of user utterances that get speed/pitch/noise/reverb"})
    asr_splits: tuple[str, ...] = field(default=("heldout_voice", "heldout_phrasing"), metadata={
        "help": "splits whose turns run the teacher's ASR and LLM on the audio ('all', 'none'); "
                "the others store the prompt and its intended answer", "metavar": "SPLIT"})
    intents: tuple[str, ...] = field(default=(), metadata={
        "help": "only these intents (default: all)", "metavar": "INTENT"})
    more_phrasings: int = field(default=0, metadata={
        "help": "also the first N of each intent's more_phrasings / more_templates (0: none; "
                "at most what every intent has): other ways to ask, the slot elsewhere "
                "('{country}, what is its capital'), trained on only; for a second plan "
                "packed with --extra-train"})
    outside_questions: int = field(default=0, metadata={
        "help": "also the first N of the domain's questions outside it (outside_questions; "
                "intent 'fallback', the refusal their answer): a student learns to say "
                "it cannot help rather than make an answer up; for a plan packed with "
                "--extra-train"})
    user_voices: tuple[str, ...] = field(default=(), metadata={
        "help": "only these user voices (default: every installed one)", "metavar": "VOICE"})
    examples_per_shard: int = field(default=32, metadata={
        "help": "examples per shard (the unit of work and of resume)"})
    shard: str = field(default="", metadata={
        "help": "take share I of N ('I/N'); default RANK/WORLD_SIZE under torchrun, else 0/1",
        "metavar": "I/N"})
    keep_audio: bool = field(default=True, metadata={
        "help": "store speech1/speech2 (16 kHz int16) so codes can be recomputed"})
    codec: str = field(default=DEFAULT_CODEC, metadata={"help": "codec name or folder"})
    recode: bool = field(default=False, metadata={
        "help": "only re-encode finished shards with the current codec (no TTS/ASR/LLM)"})
    threads: int = field(default=1, metadata={
        "help": "torch threads for the codec, and whisper's when --asr-threads is 0"})
    seed: int = field(default=0, metadata={"help": "random seed of the plan"})

    def plan_key(self) -> dict:
        """The settings that decide the plan (a folder holds one plan)."""
        skip = {"out", "shard", "keep_audio", "codec", "recode", "threads"}
        for key in ("more_phrasings", "outside_questions"):  # older plans keep their key
            if not getattr(self, key):
                skip.add(key)
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class SynthItem:
    """One planned example: who says what, in which split, with which augmentation."""

    id: str
    split: str
    intent: str
    template: int
    fill: int
    prompt_text: str
    user_voice: str
    slots: tuple[tuple[str, str], ...]
    augmentation: dict | None
    seed: int  # augmentation noise seed
    asr: bool  # the teacher's ASR and LLM hear the audio; else the intended text and answer


def _item_seed(seed: int, item_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(item_id.encode())) % (2**31)


def _make_item(ex, fill: int, voice: str, split: str, settings: SynthSettings) -> SynthItem:
    item_id = f"{ex.intent}-t{ex.template}-{voice}-{fill}"
    if settings.seed:  # another seed is another dataset: its ids never collide with seed 0's
        item_id += f"-s{settings.seed}"
    seed = _item_seed(settings.seed, item_id)
    # valid by what is said and who says it, not by the id: the same question in the same
    # voice is valid in every plan (seed) or in none, so an --extra-train of another seed
    # never trains on a valid turn
    if split == "train" and zlib.crc32(f"valid:{ex.text}|{voice}".encode()) % 10_000 < (
            settings.valid_fraction * 10_000):
        split = "valid"
    rng = np.random.default_rng(seed)
    aug = draw_augmentation(rng).as_dict() if rng.random() < settings.augment_fraction else None
    asr = split in settings.asr_splits or "all" in settings.asr_splits
    return SynthItem(item_id, split, ex.intent, ex.template, fill, ex.text, voice, ex.slots,
                     aug, seed, asr)


def user_voices(settings: SynthSettings) -> list[str]:
    from voxloop.distill.teachers.tts import available_voices

    installed = [v.name for v in available_voices("user", variants=True)]
    if not settings.user_voices:
        return installed
    missing = sorted(set(settings.user_voices) - set(installed))
    if missing:
        raise VoxloopError(f"user voices not installed here: {missing}; have {installed}")
    return [v for v in installed if v in settings.user_voices]


def training_voices(voices: list[str]) -> list[str]:
    """The voices of ``voices`` that may speak training (and dev) items: all but the
    held-out ones and those of a held-out voice's speaker."""
    return [v for v in voices if trainable(v)]


def voice_weights(voices: list[str]) -> np.ndarray:
    """Chance of each voice to be drawn: 1/sqrt(voices of its backend), normalized."""
    backends = Counter(v.split(":", 1)[0] for v in voices)
    weights = np.array([1.0 / math.sqrt(backends[v.split(":", 1)[0]]) for v in voices])
    return weights / weights.sum()


def _check(settings: SynthSettings) -> None:
    from voxloop.distill.teachers.domain.data import (
        FALLBACK_INTENT,
        intent_ids,
        more_phrasings_written,
        outside_questions_written,
    )

    known = intent_ids() + ([FALLBACK_INTENT] if settings.outside_questions else [])
    unknown = sorted(set(settings.intents) - set(known))
    if unknown:
        raise VoxloopError(f"unknown intents {unknown}; see distill/teachers/domain/domain.json")
    written = more_phrasings_written()
    if not 0 <= settings.more_phrasings <= written:
        raise VoxloopError(f"--more-phrasings {settings.more_phrasings}: choose 0 to {written} "
                           f"(every intent has {written} more written in domain.json)")
    outside = outside_questions_written()
    if not 0 <= settings.outside_questions <= outside:
        raise VoxloopError(f"--outside-questions {settings.outside_questions}: choose 0 to "
                           f"{outside} (domain.json lists {outside} outside the domain)")
    bad = sorted(set(settings.asr_splits) - set(SPLITS) - {"all", "none"})
    if bad:
        raise VoxloopError(f"--asr-splits: unknown {bad}; choose from {SPLITS}, all or none")


def _pool(settings: SynthSettings) -> list[tuple]:
    """(example, fill index) of every prompt of the plan, in domain order; the held-out
    template of a compositional intent keeps ``heldout_fills_per_template`` fillings."""
    from voxloop.distill.teachers.domain.data import examples

    fills = Counter()
    numbered = []
    for ex in examples(settings.fills_per_template, settings.seed, settings.more_phrasings,
                       settings.outside_questions):
        if settings.intents and ex.intent not in settings.intents:
            continue
        numbered.append((ex, fills[(ex.intent, ex.template)]))
        fills[(ex.intent, ex.template)] += 1
    rng = np.random.default_rng(settings.seed + 1)
    keep = set()
    for (intent, template), count in fills.items():
        if template == HELDOUT_TEMPLATE:
            n = min(count, settings.heldout_fills_per_template)
            keep.update((intent, int(i)) for i in rng.choice(count, size=n, replace=False))
    return [(ex, fill) for ex, fill in numbered
            if ex.template != HELDOUT_TEMPLATE or (ex.intent, fill) in keep]


def plan(settings: SynthSettings, voices: list[str] | None = None) -> list[SynthItem]:
    """Every example of the dataset, in a fixed order. ``voices``: user voices to use."""
    _check(settings)
    voices = user_voices(settings) if voices is None else voices
    pool = _pool(settings)
    train_voices = training_voices(voices)
    held_voices = [v for v in voices if v in HELDOUT_VOICES]
    weights = voice_weights(train_voices) if train_voices else None
    prompts = Counter(ex.intent for ex, _ in pool if ex.template != HELDOUT_TEMPLATE)
    rng = np.random.default_rng(settings.seed)
    items = []
    for ex, fill in pool:
        held = ex.template == HELDOUT_TEMPLATE
        count = settings.heldout_phrasing_voices if held else max(
            settings.voices_per_prompt, math.ceil(settings.min_turns_per_intent
                                                  / prompts[ex.intent]))
        picks = rng.choice(len(train_voices), size=min(count, len(train_voices)),
                           replace=False, p=weights)
        for i in sorted(picks):
            items.append(_make_item(ex, fill, train_voices[i], "heldout_phrasing" if held
                                    else "train", settings))
    by_intent: dict[str, list] = {}
    for ex, fill in pool:
        by_intent.setdefault(ex.intent, []).append((ex, fill))
    for voice in held_voices:  # every intent in turn (shuffled), a random prompt of each
        order = [list(by_intent)[int(i)] for i in rng.permutation(len(by_intent))]
        for k in range(min(settings.heldout_voice_prompts, len(pool))):
            candidates = by_intent[order[k % len(order)]]
            ex, fill = candidates[int(rng.integers(len(candidates)))]
            items.append(_make_item(ex, fill, voice, "heldout_voice", settings))
    return list({it.id: it for it in items}.values())  # a prompt drawn twice: once


def shards(items: list[SynthItem], examples_per_shard: int) -> dict[str, list[SynthItem]]:
    """Shard name -> its items: each split in plan order, cut every ``examples_per_shard``.

    The small evaluation splits come first, so a job cut short still has them whole.
    """
    if examples_per_shard < 1:
        raise VoxloopError("examples_per_shard must be at least 1")
    out: dict[str, list[SynthItem]] = {}
    for split in WORK_ORDER:
        mine = [it for it in items if it.split == split]
        for index, start in enumerate(range(0, len(mine), examples_per_shard)):
            out[shard_name(split, index)] = mine[start:start + examples_per_shard]
    return out


def parse_share(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N); '' -> (RANK, WORLD_SIZE) from the environment, else (0, 1)."""
    if not text:
        text = f"{os.environ.get('RANK', '0')}/{os.environ.get('WORLD_SIZE', '1')}"
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise VoxloopError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from exc
    if not 0 <= index < count:
        raise VoxloopError(f"--shard {text}: need 0 <= I < N")
    return index, count


def my_shards(names: list[str], share: tuple[int, int]) -> list[str]:
    """The shards of share ``(I, N)``: every N-th one starting at I."""
    index, count = share
    return [name for k, name in enumerate(names) if k % count == index]


def plan_sha256(items: list[SynthItem]) -> str:
    """Fingerprint of the plan: two runs agree on it iff they plan the same examples."""
    text = json.dumps([asdict(it) for it in items], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def describe_plan(settings: SynthSettings) -> str:
    """One line: examples per split, shards, voices."""
    voices = user_voices(settings)
    items = plan(settings, voices)
    counts = Counter(it.split for it in items)
    per_split = ", ".join(f"{s} {counts[s]}" for s in SPLITS if counts[s])
    held = [v for v in voices if v in HELDOUT_VOICES]
    asr = Counter(it.split for it in items if it.asr)
    return (f"{len(items)} examples ({per_split}) in "
            f"{len(shards(items, settings.examples_per_shard))} shards; "
            f"{len(voices) - len(held)} training voices, held-out voices {held}; "
            f"{len({it.prompt_text for it in items})} distinct prompts; teacher ASR+LLM on "
            f"{sum(asr.values())} turns ({', '.join(sorted(asr)) or 'none'}), intended "
            "answers elsewhere")
