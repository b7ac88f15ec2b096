"""Spoken round trip of the teachers: domain questions -> TTS(voice) -> ASR -> LLM intent.

Measures, per voice, the word error rate of ASR on the synthesized questions
and the share of transcripts the scripted assistant maps to the intended intent.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from voxloop.distill.evals.metrics import word_error_rate
from voxloop.distill.teachers.asr import ASR
from voxloop.distill.teachers.domain.assistant import ScriptedAssistant
from voxloop.distill.teachers.domain.data import Example, examples
from voxloop.distill.teachers.tts import synthesize


@dataclass(frozen=True)
class Heard:
    voice: str
    example: Example
    transcript: str
    intent: str  # what the assistant matched on the transcript


@dataclass(frozen=True)
class VoiceScore:
    voice: str
    wer: float
    intent_accuracy: float
    n: int


ORIGINAL_PHRASINGS = 6


def sample_questions(count: int, seed: int = 5) -> list[Example]:
    """A fixed, seeded sample of documented questions across fixed and compositional intents,
    from the first six phrasings of each (the sample the teacher's numbers were measured on:
    drawing from all twelve would change which questions a seed picks)."""
    pool = [e for e in examples(fills_per_template=1, seed=seed) if e.template < ORIGINAL_PHRASINGS]
    picks = np.random.default_rng(seed).choice(len(pool), size=count, replace=False)
    return [pool[int(i)] for i in sorted(picks)]


def hear_all(voices: list[str], questions: list[Example], asr: ASR,
             assistant: ScriptedAssistant) -> list[Heard]:
    """Speak every question with every voice and transcribe it; synthesis runs
    in a background thread ahead of recognition."""
    jobs = [(voice, q) for voice in voices for q in questions]
    out = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        speech = pool.map(lambda job: synthesize(job[1].text, job[0]), jobs)
        for (voice, q), (samples, rate_hz) in zip(jobs, speech, strict=True):
            text = asr.transcribe(samples, rate_hz)
            out.append(Heard(voice, q, text, assistant.match(text).intent))
    return out


def score_by_voice(heard: list[Heard]) -> list[VoiceScore]:
    scores = []
    for voice in dict.fromkeys(h.voice for h in heard):
        rows = [h for h in heard if h.voice == voice]
        wer = word_error_rate([h.example.text for h in rows], [h.transcript for h in rows])
        acc = sum(h.intent == h.example.intent for h in rows) / len(rows)
        scores.append(VoiceScore(voice, wer, acc, len(rows)))
    return scores


def format_table(scores: list[VoiceScore]) -> str:
    lines = [f"{'voice':26s} {'WER %':>6s} {'intent %':>9s} {'n':>4s}"]
    lines += [f"{s.voice:26s} {100 * s.wer:6.1f} {100 * s.intent_accuracy:9.1f} {s.n:4d}"
              for s in scores]
    return "\n".join(lines)
