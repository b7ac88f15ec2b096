"""How clearly a student's mouth says the answers, apart from its ears: ``voxloop eval mouth``.

For every distinct intended answer of the held-out splits the mouth says the answer's own
words (as if the student had written them right); the codes are decoded by the decoder the
student speaks with and judged by the Whisper judge (``evals.student.judge``). The pack's
own take of the answer is judged beside it: what the codec lets through (the ceiling).
``fixed`` and ``composed`` answers are counted apart, per answer and weighted by the
held-out turns that ask for it (which is what the student's correct % gains where its words
are right). A few minutes, not the ten of ``voxloop eval student``: for comparing mouths.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np


def evaluate_mouth(model_dir: str | Path, data_path: str | Path, out: str | Path,
                   splits: tuple[str, ...] = ("heldout_voice", "heldout_phrasing"),
                   decoder: str = "answers", threads: int = 1, progress: bool = True,
                   asr=None) -> dict:
    """Judge the mouth of ``model_dir`` on the answers of ``splits`` of the pack
    ``data_path``; writes ``mouth.json`` and ``answers.jsonl`` into ``out``."""
    import torch
    from tqdm import tqdm

    from voxloop.distill.evals.renditions import TakeJudge
    from voxloop.distill.evals.student import composed_intents
    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.pack import PackedData
    from voxloop.distill.student.vocab import Tokenizer
    from voxloop.distill.teachers.asr import ASRSettings, load_asr
    from voxloop.errors import VoxloopError

    torch.set_num_threads(threads)
    model, vocab = load_student(model_dir)
    if model.mouth is None:
        raise VoxloopError(f"{model_dir} has no mouth (it speaks with its audio steps): "
                           "train one with `voxloop distill mouth`")
    data = PackedData.load(data_path)
    rows = np.concatenate([data.indices(s) for s in splits])
    if not len(rows):
        raise VoxloopError(f"{data_path} has no turns in {', '.join(splits)}")
    texts, first, turns = np.unique(data.answer_text[rows], return_index=True,
                                    return_counts=True)
    judge = TakeJudge(load_student_codec(None, vocab, decoder),
                      asr or load_asr(ASRSettings(threads=threads)), model.config.k_out)
    tokenizer, composed = Tokenizer(vocab), composed_intents()
    answers = []
    for text, row, n in tqdm(list(zip(texts, rows[first], turns, strict=True)),
                             desc="mouth eval", unit="answer", disable=not progress):
        text = str(text)
        said = model.mouth.say(torch.tensor([tokenizer.encode_answer(text)]))[0].numpy()
        answers.append({"text": text, "turns": int(n),
                        "kind": "composed" if data.intent[row] in composed else "fixed",
                        "said": asdict(judge(said, text)),
                        "take": asdict(judge(data.answer(row), text))})
    metrics = {"model": str(model_dir), "data": str(data_path), "splits": list(splits),
               "decoder": decoder, "kinds": {}}
    for kind in ("fixed", "composed", "all"):
        of = [a for a in answers if kind in ("all", a["kind"])]
        if of:
            metrics["kinds"][kind] = summarize(of)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mouth.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "answers.jsonl", "w") as f:
        for a in answers:
            f.write(json.dumps(a) + "\n")
    return metrics


def summarize(answers: list[dict]) -> dict:
    """Answers said right %, per answer and per held-out turn, for the mouth and the take."""
    weights = np.array([a["turns"] for a in answers], dtype=float)
    out = {"answers": len(answers), "turns": int(weights.sum())}
    for who in ("said", "take"):
        right = np.array([a[who]["correct"] for a in answers], dtype=float)
        out[f"{who}_correct_pct"] = 100 * float(right.mean())
        out[f"{who}_turn_correct_pct"] = 100 * float((right * weights).sum() / weights.sum())
        out[f"{who}_wer_pct"] = 100 * float(np.mean([a[who]["wer"] for a in answers]))
    return out


def format_mouth(metrics: dict) -> str:
    lines = ["| answers | n | held-out turns | mouth correct % (per turn) | mouth WER % "
             "| take correct % (per turn) | take WER % |", "|---|---|---|---|---|---|---|"]
    for kind, m in metrics["kinds"].items():
        lines.append(f"| {kind} | {m['answers']} | {m['turns']} | {m['said_correct_pct']:.1f} "
                     f"({m['said_turn_correct_pct']:.1f}) | {m['said_wer_pct']:.1f} | "
                     f"{m['take_correct_pct']:.1f} ({m['take_turn_correct_pct']:.1f}) | "
                     f"{m['take_wer_pct']:.1f} |")
    return "\n".join(lines)
