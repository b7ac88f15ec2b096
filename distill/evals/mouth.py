"""How clearly a student's mouth says the answers, apart from its ears: ``voxloop eval mouth``.

For every distinct intended answer of the held-out splits the mouth says the answer's own
words (as if the student had written them right); the codes are decoded by the decoder the
student speaks with and judged by the Whisper judge (``evals.judge``). The pack's
own take of the answer is judged beside it: what the codec lets through (the ceiling).
``fixed`` and ``composed`` answers are counted apart, per answer and weighted by the
held-out turns that ask for it (which is what the student's correct % gains where its words
are right). A few minutes, not the ten of ``voxloop eval student``: for comparing mouths.

``choose_mouth`` (``voxloop distill choose-mouth``) does the same on the valid answers for
every mouth a training run kept, and keeps the one understood most.
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
    from voxloop.distill.student.model import load_student
    from voxloop.errors import VoxloopError

    model, vocab = load_student(model_dir)
    if model.mouth is None:
        raise VoxloopError(f"{model_dir} has no mouth (it speaks with its audio steps): "
                           "train one with `voxloop distill mouth`")
    data, rows, turns = _answers(data_path, splits)
    say = MouthJudge(vocab, model.config.k_out, decoder, threads, asr)
    answers = say(model.mouth, data, rows, turns, takes=True, progress=progress)
    metrics = {"model": str(model_dir), "data": str(data_path), "splits": list(splits),
               "decoder": decoder, "kinds": by_kind(answers)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mouth.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "answers.jsonl", "w") as f:
        for a in answers:
            f.write(json.dumps(a) + "\n")
    return metrics


class MouthJudge:
    """Says answers with a mouth and judges them (and optionally the pack's takes) through
    the decoder the student speaks with."""

    def __init__(self, vocab: dict, k_out: int, decoder: str = "answers", threads: int = 1,
                 asr=None) -> None:
        import torch

        from voxloop.distill.evals.renditions import TakeJudge
        from voxloop.distill.evals.student import composed_intents
        from voxloop.distill.student.codec import load_student_codec
        from voxloop.distill.student.vocab import Tokenizer
        from voxloop.distill.teachers.asr import ASRSettings, load_asr

        torch.set_num_threads(threads)
        self.judge = TakeJudge(load_student_codec(None, vocab, decoder),
                               asr or load_asr(ASRSettings(threads=threads)), k_out)
        self.tokenizer, self.composed = Tokenizer(vocab), composed_intents()

    def __call__(self, mouth, data, rows: np.ndarray, turns: np.ndarray, takes: bool = False,
                 progress: bool = True) -> list[dict]:
        """One dict per answer row: text, turns, kind, ``said`` (and ``take``) judged."""
        import torch
        from tqdm import tqdm

        answers = []
        for row, n in tqdm(list(zip(rows, turns, strict=True)), desc="mouth eval",
                           unit="answer", disable=not progress):
            text = str(data.answer_text[row])
            said = mouth.say(torch.tensor([self.tokenizer.encode_answer(text)]))[0].numpy()
            answer = {"text": text, "turns": int(n),
                      "kind": "composed" if data.intent[row] in self.composed else "fixed",
                      "said": asdict(self.judge(said, text))}
            if takes:
                answer["take"] = asdict(self.judge(data.answer(row), text))
            answers.append(answer)
        return answers


def _answers(data_path: str | Path, splits: tuple[str, ...]):
    """The pack, one row per distinct answer text of ``splits`` and its turns there."""
    from voxloop.distill.student.pack import PackedData
    from voxloop.errors import VoxloopError

    data = PackedData.load(data_path)
    rows = np.concatenate([data.indices(s) for s in splits])
    if not len(rows):
        raise VoxloopError(f"{data_path} has no turns in {', '.join(splits)}")
    _, first, turns = np.unique(data.answer_text[rows], return_index=True, return_counts=True)
    return data, rows[first], turns


def by_kind(answers: list[dict]) -> dict:
    """``summarize`` of the fixed, the composed and all answers."""
    kinds = {}
    for kind in ("fixed", "composed", "all"):
        of = [a for a in answers if kind in ("all", a["kind"])]
        if of:
            kinds[kind] = summarize(of)
    return kinds


def summarize(answers: list[dict]) -> dict:
    """Answers said right %, per answer and per held-out turn, for the mouth and the take."""
    weights = np.array([a["turns"] for a in answers], dtype=float)
    out = {"answers": len(answers), "turns": int(weights.sum())}
    for who in ("said", "take") if "take" in answers[0] else ("said",):
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


def choose_mouth(run: str | Path, student: str | Path, data_path: str | Path,
                 splits: tuple[str, ...] = ("valid",), composed: int = 60,
                 decoder: str = "answers", threads: int = 1, progress: bool = True,
                 asr=None) -> dict:
    """Judge every mouth a ``voxloop distill mouth`` run kept (``snapshots/``, then
    ``best.pt``) on the answers of ``splits``: all the fixed ones and ``composed`` composed
    ones spread over them. The mouth understood on the most turns wins (fewer word errors
    break ties); it is copied to ``RUN/chosen.pt``, the report to ``RUN/choose-mouth.json``."""
    import shutil

    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.mouth import Mouth
    from voxloop.distill.student.mouth_files import read_mouth
    from voxloop.errors import VoxloopError

    run = Path(run)
    best = run / "best.pt"
    candidates = sorted(run.glob("snapshots/step-*.pt")) + ([best] if best.is_file() else [])
    if not candidates:
        raise VoxloopError(f"{run} keeps no mouths: train with `voxloop distill mouth --out "
                           f"{run} --snapshot-every N`")
    model, vocab = load_student(student)
    data, rows, turns = _answers(data_path, splits)
    judge = MouthJudge(vocab, model.config.k_out, decoder, threads, asr)
    fixed = np.array([data.intent[r] not in judge.composed for r in rows])
    spread = np.flatnonzero(~fixed)
    spread = spread[np.unique(np.linspace(0, len(spread) - 1, min(composed, len(spread)))
                              .round().astype(int))] if len(spread) else spread
    keep = np.sort(np.concatenate([np.flatnonzero(fixed), spread]))
    report = {"run": str(run), "student": str(student), "data": str(data_path),
              "splits": list(splits), "decoder": decoder, "mouths": []}
    for path in candidates:
        state, config = read_mouth(path, model.config, student)
        if path == best and state["step"] in {m["step"] for m in report["mouths"]}:
            continue  # best.pt is one of the snapshots
        mouth = Mouth(config)
        mouth.load_state_dict(state["model"])
        answers = judge(mouth.eval(), data, rows[keep], turns[keep], progress=progress)
        kinds = by_kind(answers)
        report["mouths"].append({"checkpoint": str(path), "step": int(state["step"]),
                                 "valid_loss": state.get("valid", {}).get("total"),
                                 "kinds": kinds})
        if progress:
            print(f"{path.name} (step {state['step']}): understood on "
                  f"{kinds['all']['said_turn_correct_pct']:.1f} % of turns, WER "
                  f"{kinds['all']['said_wer_pct']:.1f} %")
    best = max(report["mouths"], key=lambda m: (m["kinds"]["all"]["said_turn_correct_pct"],
                                                -m["kinds"]["all"]["said_wer_pct"]))
    report["chosen"] = best["checkpoint"]
    shutil.copyfile(best["checkpoint"], run / "chosen.pt")
    (run / "choose-mouth.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_choice(report: dict) -> str:
    """``choose_mouth``'s report as a Markdown table, one row per judged mouth."""
    lines = ["| mouth | step | valid loss | understood % of turns | fixed % of answers | "
             "composed % of answers | WER % |", "|---|---|---|---|---|---|---|"]
    for m in report["mouths"]:
        kinds, loss = m["kinds"], m["valid_loss"]
        mark = " (chosen)" if m["checkpoint"] == report["chosen"] else ""
        lines.append(f"| {Path(m['checkpoint']).name}{mark} | {m['step']} | "
                     f"{'' if loss is None else f'{loss:.3f}'} | "
                     f"{kinds['all']['said_turn_correct_pct']:.1f} | "
                     + " | ".join(f"{kinds[k]['said_correct_pct']:.1f}" if k in kinds else "-"
                                  for k in ("fixed", "composed"))
                     + f" | {kinds['all']['said_wer_pct']:.1f} |")
    return "\n".join(lines)
