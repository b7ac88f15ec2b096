"""``voxloop eval votes``: a semantic student on held-out spoken questions heard on 1..N
alignments of its tokens, as the native engine's ``--native-votes`` hears them.

The pack keeps only the tokens of one alignment, so this reads the dataset's user audio:
each turn is tokenized from ``skip`` samples in for every skip any vote count needs (the
i-th of N ears skips i/N of a token), the student answers each alignment, every answer is
said through the codec and judged by Whisper, and each vote count's winner
(``distill.student.votes.winner``) is scored. One alignment alone is what the engine does
by default; the spread over alignments says how much one eval's tokens are a draw.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from voxloop.audio import MODEL_RATE_HZ
from voxloop.distill.student.votes import skips, winner

SPLITS = ("heldout_voice", "heldout_phrasing")


@dataclass(frozen=True)
class VoteEvalSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder (voxloop distill synth) whose held-out turns kept their audio"})
    votes: tuple[int, ...] = field(default=(1, 3, 4), metadata={
        "help": "vote counts to score (each turn is answered once per distinct alignment)"})
    limit: int = field(default=0, metadata={"help": "turns per split (0: all)"})
    decoder: str = field(default="answers", metadata={
        "help": "the codec's decoder for the answers (as the engine's --native-decoder)"})
    chunk_frames: int = field(default=5, metadata={"help": "prefill chunk (tokens)"})
    threads: int = field(default=1, metadata={"help": "torch threads"})
    out: str = field(default="out/vote-eval", metadata={
        "help": "folder for votes.json, votes.md and turns.jsonl"})


def evaluate_votes(model_dir: str | Path, settings: VoteEvalSettings, progress=True) -> dict:
    import torch

    from voxloop.distill.data.dataset import spoken_turns
    from voxloop.distill.evals.judge import judge
    from voxloop.distill.evals.student import transcribe_codes
    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.generate import SamplingOptions
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.one_turn import generate
    from voxloop.distill.student.user_tokens import (
        as_frames,
        encode_clips,
        load_student_semantic,
    )
    from voxloop.distill.student.vocab import Tokenizer, answer_words
    from voxloop.distill.teachers.asr import load_asr
    from voxloop.errors import VoxloopError

    torch.set_num_threads(settings.threads)
    model, vocab = load_student(model_dir)
    if model.config.user_input != "semantic":
        raise VoxloopError(f"{model_dir} hears codec codes: votes are for a semantic student")
    tokenizer, semantic = Tokenizer(vocab), load_student_semantic(None, vocab, model)
    codec, asr = load_student_codec(None, vocab, settings.decoder), load_asr()
    frame = round(MODEL_RATE_HZ / semantic.frame_rate_hz)
    plan = {n: skips(frame, n) for n in settings.votes}
    alignments = sorted({s for ss in plan.values() for s in ss})
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for split in SPLITS:
        for turn_id, audio, intended in spoken_turns(settings.data, split, settings.limit,
                                                     progress, f"votes {split}"):
            row = {"split": split, "id": turn_id, "intended": intended, "alignments": []}
            for tokens in encode_clips(semantic, [audio[s:] for s in alignments]):
                said = generate(model, tokenizer, as_frames(tokens).astype(np.int64),
                                SamplingOptions(), settings.chunk_frames)
                heard = transcribe_codes(codec, asr, said.codes)
                row["alignments"].append({
                    "text": said.text, "logprob": said.text_logprob,
                    "spoke": bool(said.codes.shape[1]), "transcript": heard,
                    "words_right": answer_words(said.text) == answer_words(intended),
                    "correct": judge(intended, heard)})
            rows.append(row)
    result = {"model": str(model_dir), "settings": asdict(settings),
              "alignments_samples": alignments,
              "scores": score(rows, plan, alignments)}
    (out / "votes.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "votes.md").write_text(format_votes(result) + "\n")
    with open(out / "turns.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return result


def score(rows: list[dict], plan: dict[int, list[int]], alignments: list[int]) -> dict:
    """Per split and overall: for each vote count, % of turns whose winning answer has the
    intended words / is understood out loud; and each single alignment's, for the spread."""
    out = {}
    for split in (*SPLITS, "all"):
        mine = [r for r in rows if split in ("all", r["split"])]
        if not mine:
            continue
        entry: dict = {"turns": len(mine), "votes": {}, "single": {}}
        for n, chosen in plan.items():
            right = correct = 0
            for r in mine:
                picks = [r["alignments"][alignments.index(s)] for s in chosen]
                best = picks[winner([p["text"] for p in picks], [p["spoke"] for p in picks])]
                right += best["words_right"]
                correct += best["correct"]
            entry["votes"][str(n)] = {"words_right": 100 * right / len(mine),
                                      "correct": 100 * correct / len(mine)}
        for j, s in enumerate(alignments):
            entry["single"][str(s)] = {
                "words_right": 100 * np.mean([r["alignments"][j]["words_right"] for r in mine]),
                "correct": 100 * np.mean([r["alignments"][j]["correct"] for r in mine])}
        out[split] = entry
    return out


def format_votes(result: dict) -> str:
    scores = result["scores"]
    splits = list(scores)
    lines = ["| ears | " + " | ".join(f"{s}: out loud / words %" for s in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for n in scores[splits[0]]["votes"]:
        cells = [f"{scores[s]['votes'][n]['correct']:.1f} / "
                 f"{scores[s]['votes'][n]['words_right']:.1f}" for s in splits]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    for a in result["alignments_samples"]:
        cells = [f"{scores[s]['single'][str(a)]['correct']:.1f} / "
                 f"{scores[s]['single'][str(a)]['words_right']:.1f}" for s in splits]
        lines.append(f"| one, {1000 * a / MODEL_RATE_HZ:.1f} ms in | " + " | ".join(cells) + " |")
    turns = ", ".join(f"{s} {scores[s]['turns']}" for s in splits)
    return "\n".join(lines) + f"\n\nturns: {turns}"
