"""End-of-turn examples: user speech cut where a turn detector would judge it, as tokens.

A turn detector asks "has the user finished?" at the first silent window after speech.
What it has heard then is the turn's audio so far plus a little silence. Each example is
exactly that, spoken by the synthetic pipeline's user voices (the dataset plan's items:
its splits, voices and phrasings, so the held-out voices and phrasings stay out of
training; and ``dev_phrasing``, the domain's dev phrasings said by training voices, which no
model trains on, to choose models by: valid holds trained phrasings only) and turned into
semantic tokens:

- ``complete`` (finished): the whole question;
- ``prefix`` (not finished): the question cut at a word boundary (what a mid-sentence
  pause leaves the detector with). Mostly (``ONE_BREATH_SHARE``) cut out of the whole
  question as it was spoken (:mod:`word_cut`: the words keep the prosody of a sentence
  still going, as a person's do who pauses to think); else TTS of those words alone (a
  finished-sounding sentence, so the words' meaning has to tell), and then, if those words
  are themselves one of the training plan's questions ("thanks" of "thanks so much", "is
  the sun a star" of "is the sun a star or a planet"), a ``complete`` example, so no two
  examples teach the same words, said the same way, both ways;
- ``paused`` (finished): the question's two parts joined by 300-1,500 ms of silence (the
  end of a question that had a pause in it), cut out of the whole question or spoken
  apart, in the same shares;
- ``filler_end`` (not finished): a prefix and then "um" / "uh" / "let me think";
- ``filler`` (finished): a filler said before or inside the whole question.

Audio: lead silence (what the prefix padding keeps), the synthesized speech trimmed to
its loud part, and ``TRAIL_MS`` of silence (what the VAD hears before it says
"paused"); a little noise on some. On ``augment_share`` of the training examples the
student's user-side augmentation (speed, pitch, a room, noise at an SNR, level: more
voices than the TTS has) on top; the evaluation splits are never augmented. Shards of
``items_per_shard`` plan items are written as they finish (npz: tokens, the pooled vectors
they quantize and the mean of the encoder frames each token pools (both float16),
offsets, labels, kinds; a json of the texts and augmentations), so a stopped job resumes
where it stopped, and ``--shard I/N`` splits the shards between processes.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from voxloop.audio import MODEL_RATE_HZ, resample
from voxloop.models import DEFAULT_SEMANTIC

KINDS = ("complete", "prefix", "paused", "filler_end", "filler")
FINISHED = {"complete": 1, "prefix": 0, "paused": 1, "filler_end": 0, "filler": 1}
FILLERS = ("um", "uh", "let me think")
LEAD_MS = (60, 300)  # silence before the speech (the VAD's prefix padding keeps some)
TRAIL_MS = (30, 160)  # silence after it: the VAD says "paused" within this
PAUSE_MS = (300, 1500)  # a pause inside a question
ONE_BREATH_SHARE = 0.75  # cuts made inside the whole question's audio (the rest: TTS alone)
MIN_REST_MS = 150  # a cut this close to the whole's end did not find the words: speak apart
EVAL_SPLITS = ("valid", "dev_phrasing", "heldout_voice", "heldout_phrasing")
DEV_SPLIT = "dev_phrasing"
DEV_VOICES_PER_PHRASING = 4  # the dev items drawn from: 158 phrasings x 4 training voices


@dataclass(frozen=True)
class TurnDataSettings:
    """``voxloop distill end-of-turn``'s data: how many plan items of each split."""

    data_out: str = field(default="data/end-of-turn", metadata={
        "help": "folder of the end-of-turn examples (resumable shards)"})
    train_items: int = field(default=1000, metadata={
        "help": "training plan items (each gives 3 examples, a one-word question 2); 0: "
                "build the evaluation splits only, to measure models on"})
    eval_items: int = field(default=120, metadata={
        "help": "items of each evaluation split (valid, dev_phrasing, heldout_voice, "
                "heldout_phrasing)"})
    items_per_shard: int = field(default=40, metadata={"help": "items per shard"})
    semantic: str = field(default=DEFAULT_SEMANTIC, metadata={
        "help": "semantic tokenizer whose tokens the model hears"})
    data_seed: int = field(default=0, metadata={"help": "which items, cuts and pauses"})
    more_phrasings: int = field(default=0, metadata={"help": "training and valid items also ask "
        "the first N of each intent's more phrasings / templates (held-out ones stay out)"})
    augment_share: float = field(default=0.5, metadata={
        "help": "share of training examples given a drawn augmentation (speed, pitch, room, "
                "noise, level); evaluation splits never are"})
    shard: str = field(default="", metadata={
        "help": "I/N: build every N-th shard from the I-th (processes side by side; "
                "default RANK/WORLD_SIZE, else all)"})


@dataclass(frozen=True)
class TurnText:
    """What to speak for one example: segments joined by ``pause_ms`` of silence, each
    spoken alone, or (``one_breath``) all as one utterance cut apart at their word
    boundaries; the example keeps the first ``heard`` segments (0: all)."""

    kind: str
    segments: tuple[str, ...]
    pause_ms: int = 0
    one_breath: bool = False
    heard: int = 0

    @property
    def said(self) -> tuple[str, ...]:
        """The segments the example keeps."""
        return self.segments[:self.heard or len(self.segments)]

    @property
    def finished(self) -> int:
        return FINISHED[self.kind]

    def apart(self) -> TurnText:
        """This turn with only its kept segments, each spoken alone. A prefix said alone
        that is a whole question of the training plan is a complete question."""
        kind = "complete" if self.kind == "prefix" and is_trained_question(self.said[0]) \
            else self.kind
        return replace(self, kind=kind, segments=self.said, one_breath=False, heard=0)


def texts_for(prompt: str, rng: np.random.Generator) -> list[TurnText]:
    """The three examples of one question: complete, a prefix, and one of paused / filler
    at the end of a prefix / a filler in a whole question (a one-word question: complete
    and a filler only)."""
    words = prompt.split()
    out = [TurnText("complete", (prompt,))]
    if len(words) < 2:
        return out + [TurnText("filler", (f"{rng.choice(FILLERS)}, {prompt}",))]
    cut = int(rng.integers(1, len(words)))
    head, tail = " ".join(words[:cut]).rstrip(","), " ".join(words[cut:])
    if rng.random() < ONE_BREATH_SHARE:
        out.append(TurnText("prefix", (head, tail), one_breath=True, heard=1))
    else:
        out.append(TurnText("prefix", (head,)).apart())
    filler = str(rng.choice(FILLERS))
    pick = rng.random()
    if pick < 0.5:
        out.append(TurnText("paused", (head, tail), int(rng.integers(*PAUSE_MS)),
                            one_breath=bool(rng.random() < ONE_BREATH_SHARE)))
    elif pick < 0.75:
        out.append(TurnText("filler_end", (f"{head}, {filler}",)))
    elif pick < 0.875:
        out.append(TurnText("filler", (f"{filler}, {prompt}",)))
    else:
        out.append(TurnText("filler", (f"{head}, {filler}, {tail}",)))
    return out


@lru_cache(maxsize=1)
def _trained_questions() -> frozenset[str]:
    from voxloop.distill.teachers.domain.data import ALL_FILLS, examples, more_phrasings_written
    from voxloop.distill.teachers.domain.text import normalize
    from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE

    return frozenset(normalize(e.text) for e in examples(ALL_FILLS, more=more_phrasings_written())
                     if e.template != HELDOUT_TEMPLATE)


def is_trained_question(text: str) -> bool:
    """Whether ``text`` is a whole question of the training plan (any phrasing but the
    held-out one, any slot fill), as the domain normalizes it."""
    from voxloop.distill.teachers.domain.text import normalize

    return normalize(text) in _trained_questions()


def trim_speech(samples: np.ndarray, floor: float = 0.02) -> np.ndarray:
    """``[T]`` -> the part from the first to the last sample above ``floor`` x the peak."""
    loud = np.flatnonzero(np.abs(samples) > floor * max(1e-9, float(np.abs(samples).max())))
    return samples[loud[0]:loud[-1] + 1] if len(loud) else samples[:0]


def speak(turn: TurnText, voice: str, rng: np.random.Generator, synthesize
          ) -> tuple[np.ndarray, TurnText]:
    """``turn`` by ``voice`` at 16 kHz ``[T]``: lead silence, the segments joined by the
    pause, trailing silence, and on half of them a little white noise (40-60 dB SNR); and
    the turn as it was spoken (:func:`spoken_segments`)."""
    def silence(ms: int) -> np.ndarray:
        return np.zeros(ms * MODEL_RATE_HZ // 1000, np.float32)

    def say(text: str) -> np.ndarray:
        samples, rate_hz = synthesize(text, voice)
        return trim_speech(resample(samples, rate_hz, MODEL_RATE_HZ))

    parts = [silence(int(rng.integers(*LEAD_MS)))]
    pieces, turn = spoken_segments(turn, say, MODEL_RATE_HZ)
    for i, piece in enumerate(pieces):
        if i:
            parts.append(silence(turn.pause_ms))
        parts.append(piece)
    parts.append(silence(int(rng.integers(*TRAIL_MS))))
    audio = np.concatenate(parts).astype(np.float32)
    peak = float(np.abs(audio).max()) or 1.0
    audio *= float(rng.uniform(0.3, 0.9)) / peak
    if rng.random() < 0.5:
        rms = float(np.sqrt(np.mean(audio**2))) or 1e-3
        audio += rng.normal(0, rms * 10 ** (-rng.uniform(40, 60) / 20), len(audio)).astype(
            np.float32)
    return audio, turn


def spoken_segments(turn: TurnText, say, rate_hz: int) -> tuple[list[np.ndarray], TurnText]:
    """The audio of ``turn``'s heard segments, each ``[T]`` at ``rate_hz``, and the turn as
    spoken; ``say(text)`` speaks a text from its first to its last loud sample. A
    ``one_breath`` pair is cut out of the whole utterance (:func:`cut_in_one_breath`), else
    (or when that finds no cut: the turn comes back not ``one_breath``, so its label and
    per-kind accuracy say how it was really spoken) each segment is spoken alone."""
    if turn.one_breath and len(turn.segments) == 2:
        pieces = cut_in_one_breath(*turn.segments, say, rate_hz)
        if pieces is not None:
            return pieces[:len(turn.said)], turn
        turn = turn.apart()
    return [say(text) for text in turn.said], turn


def cut_in_one_breath(head: str, tail: str, say, rate_hz: int) -> list[np.ndarray] | None:
    """``[head's audio, tail's audio]`` cut out of ``say(head + " " + tail)`` where the
    head's words end (:func:`head_end_sample`); None when the cut leaves the tail under
    ``MIN_REST_MS`` (the alignment did not find the words)."""
    from voxloop.distill.data.word_cut import head_end_sample

    whole = say(f"{head} {tail}")
    end = head_end_sample(whole, say(head), rate_hz)
    if 0 < end < len(whole) - MIN_REST_MS * rate_hz // 1000:
        return [whole[:end], whole[end:]]
    return None


def pick_items(split: str, count: int, seed: int, more_phrasings: int = 0) -> list:
    """``count`` plan items of ``split`` (the synth job's plan with ``more_phrasings``: its
    voices and phrasings), drawn without replacement by a seeded hash, so the draw never
    depends on order."""
    items = list(_dev_items()) if split == DEV_SPLIT else \
        [i for i in _plan_items(more_phrasings) if i.split == split]
    items.sort(key=lambda i: zlib.crc32(f"{seed}:{i.id}".encode()))
    return items[:count]


@lru_cache(maxsize=2)
def _plan_items(more_phrasings: int = 0) -> tuple:
    """The synth job's plan (~4 s to make: once per process, not once per split)."""
    from voxloop.distill.data.plan import SynthSettings, plan

    return tuple(plan(SynthSettings(more_phrasings=more_phrasings)))


@lru_cache(maxsize=1)
def _dev_items() -> tuple:
    """The dev phrasings (``dev_examples``), each said by ``DEV_VOICES_PER_PHRASING``
    training voices drawn as the synth plan draws them (never a held-out voice)."""
    from voxloop.distill.data import plan as synth_plan
    from voxloop.distill.teachers.domain.data import dev_examples

    rng = np.random.default_rng(0)
    voices = synth_plan.training_voices(synth_plan.user_voices(synth_plan.SynthSettings()))
    weights = synth_plan.voice_weights(voices)
    items = []
    for k, e in enumerate(dev_examples(DEV_VOICES_PER_PHRASING, rng)):
        voice = str(rng.choice(voices, p=weights))
        items.append(synth_plan.SynthItem(f"{e.intent}-d{e.template}-{voice}-{k}", DEV_SPLIT,
                                          e.intent, e.template, 0, e.text, voice, e.slots,
                                          None, 0, False))
    return tuple(items)


def build_shard(items: list, tokenizer, seed: int, synthesize=None,
                augment_share: float = 0.0) -> dict:
    """Examples of ``items`` -> arrays: ``tokens``, ``pooled`` (float16 ``[F, D]``) and
    ``encoder`` (float16 ``[F, 384]``: the mean of the encoder frames each token pools),
    each concatenated, ``offsets [N + 1]``, ``labels [N]``, ``kinds [N]`` (index into
    KINDS), plus ``texts``, ``voices`` and ``augmentations`` (None or the recipe's dict).
    ``augment_share`` of the examples get a drawn augmentation (their own random stream:
    the texts, cuts and pauses are those of an unaugmented build)."""
    import torch

    from voxloop.distill.data.augment import augment, draw_augmentation

    if synthesize is None:
        from voxloop.distill.teachers.tts import synthesize
    synthesize = lru_cache(maxsize=16)(synthesize)  # an item's examples share their words
    arrays = {"tokens": [], "pooled": [], "encoder": []}
    offsets, labels, kinds, texts, voices, augmentations = [0], [], [], [], [], []
    for item in items:
        rng = np.random.default_rng(zlib.crc32(f"{seed}:{item.id}".encode()))
        aug_rng = np.random.default_rng(zlib.crc32(f"{seed}:{item.id}:augment".encode()))
        for turn in texts_for(item.prompt_text, rng):
            audio, turn = speak(turn, item.user_voice, rng, synthesize)
            recipe = None
            if aug_rng.random() < augment_share:
                recipe = draw_augmentation(aug_rng)
                audio = augment(audio, MODEL_RATE_HZ, recipe, int(aug_rng.integers(1 << 31)))
            groups = tokenizer.encode(torch.from_numpy(audio)[None], output="frames")
            vectors = tokenizer.pool_groups(groups)
            row = tokenizer.quantize(vectors)[0].numpy()
            arrays["tokens"].append(row.astype(np.int16))
            arrays["pooled"].append(vectors[0].numpy().astype(np.float16))
            arrays["encoder"].append(groups[0].mean(1).numpy().astype(np.float16))
            offsets.append(offsets[-1] + len(row))
            labels.append(turn.finished)
            kinds.append(KINDS.index(turn.kind))
            texts.append(turn_label(turn))
            voices.append(item.user_voice)
            augmentations.append(None if recipe is None else recipe.as_dict())
    return {**{k: np.concatenate(v) for k, v in arrays.items()},
            "offsets": np.array(offsets, np.int64),
            "labels": np.array(labels, np.int8), "kinds": np.array(kinds, np.int8),
            "texts": texts, "voices": voices, "augmentations": augmentations}


def turn_label(turn: TurnText) -> str:
    """What an example says, for reading a shard: segments joined by " | " (spoken apart)
    or " / " (cut out of one utterance), the words not heard in brackets."""
    said = (" / " if turn.one_breath else " | ").join(turn.said)
    rest = " ".join(turn.segments[len(turn.said):])
    return f"{said} [{rest}]" if rest else said


def said_in_one_breath(label: str) -> bool:
    """Whether a :func:`turn_label` is of an example cut out of one utterance."""
    return " / " in label or (label.endswith("]") and " [" in label)


def load_split(folder: str | Path, split: str) -> dict:
    """Every shard of ``split``: ``sequences`` (list of int64 ``[F]``), ``pooled`` and
    ``encoder`` (lists of float16 ``[F, D]``; None when a shard predates them), ``labels
    [N]``, ``kinds [N]``, ``texts``, ``voices``, ``augmented [N]``."""
    sequences, labels, kinds, texts, voices, augmented = [], [], [], [], [], []
    vectors: dict[str, list | None] = {"pooled": [], "encoder": []}
    manifest = Path(folder) / "manifest.json"
    planned = json.loads(manifest.read_text()).get("shards") if manifest.is_file() else None
    for path in sorted(Path(folder).glob(f"{split}-*.npz")):
        if path.name.endswith(".tmp.npz") or (planned is not None and path.name not in planned):
            continue  # a killed writer's, or of a build of more items than planned now
        with np.load(path) as shard:
            offsets = shard["offsets"]
            spans = list(zip(offsets[:-1], offsets[1:], strict=True))
            tokens = shard["tokens"]  # each shard["..."] reads the whole array again
            sequences += [tokens[a:b].astype(np.int64) for a, b in spans]
            for key, rows in vectors.items():
                if rows is not None and key in shard:
                    array = shard[key]
                    rows += [array[a:b] for a, b in spans]
                else:
                    vectors[key] = None
            labels.append(shard["labels"])
            kinds.append(shard["kinds"])
            meta = json.loads(str(shard["meta"]))
        texts += meta["texts"]
        voices += meta["voices"]
        augmented += [a is not None for a in meta.get("augmentations") or [None] * len(spans)]
    empty = np.zeros(0, np.int8)
    return {"sequences": sequences, **vectors,
            "labels": np.concatenate(labels) if labels else empty,
            "kinds": np.concatenate(kinds) if kinds else empty, "texts": texts,
            "voices": voices, "augmented": np.array(augmented, dtype=bool),
            "one_breath": np.array([said_in_one_breath(t) for t in texts], dtype=bool)}
