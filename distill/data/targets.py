"""What the student is trained to answer: the teacher's answer, or the intended one.

The teacher cascade mishears: on ``data/distill-v1`` its Whisper got a third of
the augmented user turns wrong, and its LLM then answered another question or,
mostly, fell back ("Sorry, I can only help with ..."). Trained on those answers
(``teacher`` targets), the student learns to mishear too, and to fall back when
unsure. ``intended`` targets are the answers the prompts ask for: the scripted
teacher's answer to the prompt as written (``meta["prompt_answer"]``), spoken by
the assistant voice, with the prompt's words as the CTC target.

With intended targets, the questions of a codec corpus (``voxloop distill corpus``:
the same domain, voices and held-out rules) become training turns too; its
held-out utterances are never used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from voxloop.distill.data.dataset import DialogueExample
from voxloop.errors import VoxloopError

RENDITIONS_FILE = "renditions.npz"  # a dataset's chosen answer takes: codes by cache key


class AnswerCodes:
    """Codec codes ``int16 [K, F]`` of the assistant voice saying an answer: the take
    ``voxloop distill renditions`` chose for it (``RENDITIONS_FILE``), else from a turn of
    the dataset that has them (the answer cache makes every take of one answer the same
    audio), else from the dataset's answer cache, synthesized there if missing."""

    def __init__(self, folder: str | Path, codec_name: str,
                 examples: list[DialogueExample]) -> None:
        from voxloop.distill.data.synth import AnswerCache

        self.codes = {e.answer_text: e.answer_codes for e in examples}
        self.cache = AnswerCache(Path(folder) / "answers")
        chosen = load_renditions(folder)
        for text in self.codes:
            key = self.cache.path(text).stem
            if key in chosen:
                self.codes[text] = chosen[key]
        self.codec_name = codec_name
        self._runner = None

    def __call__(self, text: str) -> np.ndarray:
        if text not in self.codes:
            self.codes[text] = self.runner.encode(self.cache.get(text)[0])
        return self.codes[text]

    @property
    def runner(self):
        if self._runner is None:
            from voxloop.distill.data.synth import CodecRunner

            self._runner = CodecRunner(self.codec_name)
        return self._runner


def load_renditions(folder: str | Path) -> dict[str, np.ndarray]:
    """A dataset's chosen answer takes: answer-cache key -> codes ``int16 [K, F]``."""
    path = Path(folder) / RENDITIONS_FILE
    if not path.is_file():
        return {}
    with np.load(path) as z:
        return {key: z[key] for key in z.files}


def intended_targets(examples: list[DialogueExample], answers: AnswerCodes
                     ) -> list[DialogueExample]:
    """``examples`` retargeted at the answers their prompts intend; the teacher's answer
    is kept as ``meta["teacher_text"]``."""
    missing = [e.id for e in examples if "prompt_answer" not in e.meta]
    if missing:
        raise VoxloopError(f"{len(missing)} turns ({missing[0]}, ...) have no intended answer "
                           "(meta prompt_answer, written by the scripted LLM teacher): "
                           "use --targets teacher for this dataset")
    return [dataclasses.replace(e, answer_text=e.meta["prompt_answer"],
                                answer_codes=answers(e.meta["prompt_answer"]),
                                asr_text=e.prompt_text,
                                meta={**e.meta, "teacher_text": e.answer_text})
            for e in examples]


def corpus_turns(corpus: str | Path, answers: AnswerCodes) -> list[DialogueExample]:
    """Training turns from the questions of a codec corpus's train split: its wav encoded
    by the dataset's codec, the scripted answer as the target."""
    from tqdm import tqdm

    from voxloop.audio import MODEL_RATE_HZ, read_wav, resample, to_pcm16
    from voxloop.distill.teachers.domain.assistant import ScriptedAssistant
    from voxloop.distill.teachers.domain.data import ALL_FILLS, examples

    corpus = Path(corpus)
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        raise VoxloopError(f"{corpus} is not a codec corpus (no manifest.jsonl): "
                           "build one with `voxloop distill corpus`")
    assistant = ScriptedAssistant()
    # the corpus's voices read its questions and its answers: only a question is a turn
    # (an answer read aloud, "After Sunday comes Monday.", is matched as some question)
    questions = {e.text for e in examples(ALL_FILLS)}
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    turns = []
    for row in tqdm([r for r in rows if r["split"] == "train" and r["text"] in questions],
                    desc="corpus turns", unit="utt"):
        match = assistant.match(row["text"])
        samples, rate_hz = read_wav(corpus / "train" / f"{row['uid']}.wav")
        pcm = to_pcm16(resample(samples, rate_hz, MODEL_RATE_HZ))
        turns.append(DialogueExample(
            id=f"corpus-{row['uid']}", split="train", intent=match.intent,
            user_voice=row["voice"], prompt_text=row["text"], asr_text=row["text"],
            answer_text=match.answer, user_codes=answers.runner.encode(pcm),
            answer_codes=answers(match.answer),
            meta={"prompt_answer": match.answer, "teacher_text": match.answer,
                  "augmentation": row.get("augmentation")}))
    return turns
