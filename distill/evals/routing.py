"""``voxloop eval routing``: when the hybrid engine should hand a spoken turn to the cascade.

The student answers spoken questions of its domain better than the cascade on the whole,
but where it is unsure of its words (their log-probability under its own text head is
low) it is wrong far more often, and there the cascade (its Whisper hears the question
anew) may be right. For every turn of the splits this reads the user audio of a dataset,
lets the student answer it (heard as the engine's stream hears it), and takes the
cascade's answer (the synth job's, where it ran the ASR teacher; else the ASR teacher and
the LLM run now). The threshold is chosen on one split (``choose_on``: by default valid,
never a held-out split) as the one whose hybrid (the student, or the cascade below the
threshold) has the most intended answers, and is then measured on every split.

Writes ``routing.json`` (the threshold, per split: student, cascade and hybrid % of
intended words, the share handed over), ``routing.md``, ``turns.jsonl`` and
``routing.png`` (hybrid words right against the share handed over, per split); with
``export``, the threshold beside the student's weights (:mod:`distill.student.confidence`),
where the hybrid engine reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class RoutingSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder (voxloop distill synth) whose turns kept their user audio"})
    splits: tuple[str, ...] = field(default=("valid", "heldout_voice", "heldout_phrasing"),
                                    metadata={"help": "splits to measure", "metavar": "SPLIT"})
    choose_on: str = field(default="valid", metadata={
        "help": "the split the threshold is chosen on (keep the held-out ones out)"})
    limit: int = field(default=0, metadata={"help": "turns per split (0: all)"})
    chunk_frames: int = field(default=5, metadata={"help": "prefill chunk (tokens)"})
    threads: int = field(default=1, metadata={"help": "torch threads"})
    out: str = field(default="out/routing-eval", metadata={
        "help": "folder for routing.json, routing.md, turns.jsonl and routing.png"})
    export: bool = field(default=False, metadata={
        "help": "keep the chosen threshold beside the student's weights (routing.json), "
                "where the hybrid engine reads it"})


def hybrid_right(rows: list[dict], threshold: float) -> tuple[float, float]:
    """(% of turns the hybrid answers with the intended words, % handed to the cascade)
    when turns whose student words score below ``threshold`` go to the cascade."""
    routed = np.array([r["logprob"] < threshold for r in rows], bool)
    right = np.where(routed, [r["cascade_right"] for r in rows],
                     [r["student_right"] for r in rows])
    return 100 * float(right.mean()), 100 * float(routed.mean())


def choose_threshold(rows: list[dict]) -> float:
    """The threshold with the most hybrid answers right on ``rows``; of equals, the one
    that hands over fewest. Each lies halfway between two turns' log-probabilities (or is
    ``-inf``: never hand over; or 0: always)."""
    values = np.unique([r["logprob"] for r in rows])
    candidates = [-np.inf, *(values[:-1] + values[1:]) / 2, 0.0]

    def merit(threshold: float) -> tuple[float, float]:
        right, handed_over = hybrid_right(rows, threshold)
        return right, -handed_over

    return float(max(candidates, key=merit))


def score(rows: list[dict], threshold: float) -> dict:
    """Per split and overall at ``threshold``."""
    out = {}
    for split in [*dict.fromkeys(r["split"] for r in rows), "all"]:
        mine = [r for r in rows if split in ("all", r["split"])]
        routed = [r for r in mine if r["logprob"] < threshold]
        hybrid, share = hybrid_right(mine, threshold)
        out[split] = {
            "turns": len(mine),
            "student_pct": 100 * float(np.mean([r["student_right"] for r in mine])),
            "cascade_pct": 100 * float(np.mean([r["cascade_right"] for r in mine])),
            "hybrid_pct": hybrid, "routed_pct": share, "routed": len(routed),
            "routed_student_right": sum(r["student_right"] for r in routed),
            "routed_cascade_right": sum(r["cascade_right"] for r in routed)}
    return out


def evaluate_routing(model_dir: str | Path, settings: RoutingSettings, progress=True) -> dict:
    import torch
    from tqdm import tqdm

    from voxloop.distill.data.dataset import iter_examples, load_manifest
    from voxloop.distill.student.generate import SamplingOptions
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.one_turn import generate
    from voxloop.distill.student.user_tokens import encode_clips, load_student_semantic
    from voxloop.distill.student.vocab import Tokenizer, answer_words
    from voxloop.distill.teachers.asr import load_asr
    from voxloop.distill.teachers.llm import load_llm
    from voxloop.errors import VoxloopError

    if settings.choose_on not in settings.splits:
        raise VoxloopError(f"--choose-on {settings.choose_on} is not one of --splits "
                           f"{' '.join(settings.splits)}")
    torch.set_num_threads(settings.threads)
    model, vocab = load_student(model_dir)
    if model.config.user_input != "semantic":
        raise VoxloopError(f"{model_dir} hears codec codes: routing is measured for a "
                           "semantic student")
    tokenizer, semantic = Tokenizer(vocab), load_student_semantic(None, vocab)
    asr, llm = load_asr(), load_llm()
    manifest = load_manifest(settings.data)
    rows = []
    for split in settings.splits:
        total = manifest["splits"].get(split, {}).get("examples_done", 0)
        if not total:
            raise VoxloopError(f"{settings.data} has no {split} turns built yet")
        turns = iter_examples(settings.data, split)
        for k, example in enumerate(tqdm(turns, desc=f"routing {split}", unit="turn",
                                         total=min(total, settings.limit or total),
                                         disable=not progress)):
            if settings.limit and k == settings.limit:
                break
            if example.user_audio is None or "prompt_answer" not in example.meta:
                raise VoxloopError(f"{settings.data} keeps no user audio or intended answer "
                                   f"for {example.id}: build it with voxloop distill synth")
            audio = example.user_audio.astype(np.float32) / 32768.0
            intended = answer_words(example.meta["prompt_answer"])
            tokens = encode_clips(semantic, [audio])[0]
            said = generate(model, tokenizer, tokens[None].astype(np.int64),
                            SamplingOptions(), settings.chunk_frames)
            ran = bool(example.meta.get("asr"))
            heard = example.asr_text if ran else asr.transcribe(audio, 16_000)
            cascade = example.answer_text if ran else llm.reply([], heard)
            rows.append({"split": split, "id": example.id, "intended": example.meta[
                "prompt_answer"], "student": said.text, "logprob": said.text_logprob,
                "student_right": answer_words(said.text) == intended, "cascade_heard": heard,
                "cascade": cascade, "cascade_right": answer_words(cascade) == intended,
                "cascade_ran_in_synth": ran})
    chooser = [r for r in rows if r["split"] == settings.choose_on]
    threshold = choose_threshold(chooser)
    result = {"model": str(model_dir), "settings": asdict(settings),
              "min_words_logprob": threshold, "scores": score(rows, threshold)}
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "routing.md").write_text(format_routing(result) + "\n")
    with open(out / "turns.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    _plot(rows, threshold, out / "routing.png")
    if settings.export:
        from voxloop.distill.student.confidence import write_threshold
        from voxloop.distill.student.model import student_folder

        write_threshold(student_folder(model_dir), threshold, {
            "chosen_on": settings.choose_on, "data": settings.data,
            "command": "voxloop eval routing", "scores": result["scores"]})
    return result


def format_routing(result: dict) -> str:
    lines = [f"threshold (log-probability of the student's words, chosen on "
             f"{result['settings']['choose_on']}): {result['min_words_logprob']:.3f}", "",
             "| split | turns | student % | cascade % | hybrid % | handed over % | "
             "of those, student right / cascade right |", "|---|---|---|---|---|---|---|"]
    for split, s in result["scores"].items():
        lines.append(f"| {split} | {s['turns']} | {s['student_pct']:.1f} | "
                     f"{s['cascade_pct']:.1f} | {s['hybrid_pct']:.1f} | {s['routed_pct']:.1f} | "
                     f"{s['routed_student_right']} / {s['routed_cascade_right']} |")
    return "\n".join(lines)


def _plot(rows: list[dict], threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split in dict.fromkeys(r["split"] for r in rows):
        mine = [r for r in rows if r["split"] == split]
        grid = [-np.inf, *sorted({r["logprob"] for r in mine}), np.inf]
        points = np.array([hybrid_right(mine, t)[::-1] for t in grid])
        line, = ax.plot(points[:, 0], points[:, 1], label=split)
        share, right = hybrid_right(mine, threshold)[::-1]
        ax.plot([share], [right], "o", color=line.get_color())
    ax.set_xlabel("turns handed to the cascade (%)")
    ax.set_ylabel("intended answer words (%)")
    ax.set_title(f"hybrid routing by the student's word log-probability (dot: {threshold:.2f})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
