"""A speech corpus for codec training, synthesized by the teacher voices.

Texts are the domain's questions and the assistant's answers. Some voices and
one phrasing per intent are held out: they appear only in ``heldout/``. Each
utterance is a 16-bit wav at the codec's sample rate; ``manifest.jsonl``
records text, voice, augmentation and split. A job started again skips
utterances whose wav already exists, so a killed build resumes.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from voxloop.audio import resample, write_wav
from voxloop.distill.data.augment import Augmentation, augment, draw_augmentation
from voxloop.distill.teachers.domain.assistant import ScriptedAssistant
from voxloop.distill.teachers.domain.data import examples
from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE, HELDOUT_VOICES, trainable
from voxloop.distill.teachers.tts import ASSISTANT_VOICE, available_voices, synthesize
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write


@dataclass(frozen=True)
class CorpusSettings:
    out: str = field(default="data/codec-corpus", metadata={"help": "output folder"})
    sample_rate_hz: int = field(default=16000, metadata={"help": "corpus sample rate"})
    fills_per_template: int = field(default=3, metadata={
        "help": "slot fillings per compositional template"})
    user_utterances_per_voice: int = field(default=220, metadata={
        "help": "questions spoken by each training user voice"})
    heldout_per_voice: int = field(default=24, metadata={"help": "held-out utterances per voice"})
    workers: int = field(default=2, metadata={"help": "parallel synthesis processes"})
    seed: int = field(default=0, metadata={"help": "random seed"})


@dataclass(frozen=True)
class Utterance:
    uid: str
    text: str
    voice: str
    split: str  # "train" or "heldout"
    augmentation: dict | None


def plan(settings: CorpusSettings) -> list[Utterance]:
    """Every utterance of the corpus, deterministic for a seed."""
    rng = np.random.default_rng(settings.seed)
    assistant = ScriptedAssistant()
    pool = examples(settings.fills_per_template, settings.seed)
    train_q = [e.text for e in pool if e.template != HELDOUT_TEMPLATE]
    held_q = [e.text for e in pool if e.template == HELDOUT_TEMPLATE]
    answers = sorted({assistant.reply([], q) for q in train_q})
    held_answers = sorted({assistant.reply([], q) for q in held_q} - set(answers))
    out: list[Utterance] = []

    def pick(texts: list[str], n: int) -> list[str]:
        return [texts[int(i)] for i in rng.choice(len(texts), size=min(n, len(texts)),
                                                  replace=False)]

    for voice in [v.name for v in available_voices()]:
        key = voice.replace(":", "_").replace("+", "_")
        if voice == ASSISTANT_VOICE:
            # Piper samples its prosody: two takes of every answer add variety.
            splits = [("train", answers + answers + pick(train_q, 60), False),
                      ("heldout", pick(held_answers + held_q, settings.heldout_per_voice), False)]
        elif voice in HELDOUT_VOICES:
            splits = [("heldout", pick(held_q + held_answers, settings.heldout_per_voice), True)]
        elif not trainable(voice):  # a held-out voice's speaker
            continue
        else:
            splits = [("train", pick(train_q, settings.user_utterances_per_voice) +
                       pick(answers, 40), True),
                      ("heldout", pick(held_q, settings.heldout_per_voice // 2), True)]
        for split, texts, augmented in splits:
            for i, text in enumerate(texts):
                aug = draw_augmentation(rng).as_dict() if augmented and rng.random() < 0.7 else None
                out.append(Utterance(f"{split}-{key}-{i:04d}", text, voice, split, aug))
    return out


def _render(job: tuple[Utterance, str, int, int]) -> str:
    utt, folder, rate_hz, seed = job
    samples, voice_hz = synthesize(utt.text, utt.voice)
    if utt.augmentation:
        samples = augment(samples, voice_hz, Augmentation(**utt.augmentation), seed)
    samples = resample(samples, voice_hz, rate_hz)
    peak = float(np.max(np.abs(samples)))
    if peak > 0:
        samples = samples * min(1.0, 0.95 / peak)
    atomic_write(Path(folder) / utt.split / f"{utt.uid}.wav",  # a kill leaves no half wav
                 lambda tmp: write_wav(tmp, samples, rate_hz))
    return utt.uid


def build_corpus(settings: CorpusSettings) -> Path:
    """Synthesize the planned corpus into ``settings.out``; resumable."""
    out = Path(settings.out)
    utterances = plan(settings)
    manifest = out / "manifest.jsonl"
    if manifest.is_file() and [json.loads(line) for line in manifest.read_text().splitlines()
                               if line.strip()] != [u.__dict__ for u in utterances]:
        raise VoxloopError(f"{out} holds another corpus plan (the domain's phrasings, the "
                           "voices or the settings changed): its wavs would not match; "
                           "use another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, lambda tmp: tmp.write_text(
        "".join(json.dumps(u.__dict__) + "\n" for u in utterances)))
    # each utterance's seed is its place in the plan: a resumed build renders as a whole one
    jobs = [(u, str(out), settings.sample_rate_hz, settings.seed + i)
            for i, u in enumerate(utterances) if not (out / u.split / f"{u.uid}.wav").is_file()]
    with ProcessPoolExecutor(max_workers=settings.workers) as pool:
        for _ in tqdm(pool.map(_render, jobs, chunksize=4), total=len(jobs),
                      desc="codec corpus", unit="utt"):
            pass
    return out
