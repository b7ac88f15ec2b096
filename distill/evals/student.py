"""Evaluate the student on held-out turns: generate, decode, transcribe, judge.

For every turn of the held-out splits the student hears the user's codes (fed
in chunks, as the server will), writes its answer, and its codes are decoded
by the codec and transcribed by Whisper. Measured per split:

- ``correct_pct``: answers judged correct (:mod:`judge`: the key content of the
  teacher's answer, text2, in the transcript).
- ``wer_pct``: word error rate of the transcripts against text2.
- ``text_exact_pct``: the student's own answer words equal text2's, and
  ``text_token_acc_pct``: teacher-forced accuracy of the text head.
- ``heard_exact_pct``: the user's words as the student's own CTC head heard them (what the
  native engine reports as the user's transcript) equal the prompt's; and
  ``correct_when_heard_pct`` / ``correct_when_misheard_pct``: answers right where they did
  and where they did not (whether a miss is the ears' or the words').
- ``speed_x_rt``: seconds of answer audio per second of generation (every
  step: text and audio), one thread; ``first_frame_ms``: end of turn -> first
  complete audio frame.

The codec ceiling applies the same judge to the teacher's own answer codes
(``K_out`` codebooks) decoded: what Whisper can understand through this codec.

``kinds`` splits all turns by answer: ``fixed`` (one sentence per intent, heard in training
many times) and ``composed`` (the domain's compositional intents: arithmetic, capitals,
spelling, conversions, days, whose sentence is built from slots and may never have been
heard whole): saying a sentence the student has not heard is a skill of its own.

The teacher is not always right: its Whisper mishears some augmented voices and
its LLM then answers another question or falls back. Where the dataset knows the
answer each prompt intends (the scripted teacher's answer to the prompt as
written), two more numbers: ``correct_intended_pct``, the same judge against the
intended answer, and ``teacher_intended_pct``, turns whose teacher answer is the
intended one (the cascade's own accuracy on these turns, in text).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from voxloop.distill.evals.judge import judge
from voxloop.distill.evals.metrics import word_error_rate
from voxloop.distill.student.config import StudentEvalSettings


def _summary(rows: list[dict], prefix: str) -> dict:
    answers = [r["answer_text"] for r in rows]
    heard = [r[f"{prefix}transcript"] for r in rows]
    return {"n": len(rows),
            "correct_pct": 100 * float(np.mean([r[f"{prefix}correct"] for r in rows])),
            "wer_pct": 100 * word_error_rate(answers, heard)}


def evaluate_student(model_dir: str | Path, settings: StudentEvalSettings, asr=None,
                     codec=None) -> dict:
    """Run the evaluation; writes ``metrics.json``, ``turns.jsonl``, ``report.md`` and
    ``student-eval.png`` into ``settings.out`` and returns the metrics."""
    import torch
    from tqdm import tqdm

    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.config import StudentTrainSettings
    from voxloop.distill.student.generate import SamplingOptions
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.one_turn import generate
    from voxloop.distill.student.residual_levels import residual_books
    from voxloop.distill.student.train import evaluate
    from voxloop.distill.student.train_data import load_data
    from voxloop.distill.student.vocab import Tokenizer, answer_words

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    model, vocab = load_student(model_dir)
    tokenizer = Tokenizer(vocab)
    data = load_data(settings.data, out, vocab, splits=tuple(settings.splits),
                     residual_books=residual_books(model))
    codec = codec or load_student_codec(settings.codec, vocab, settings.decoder)
    if asr is None:
        from voxloop.distill.teachers.asr import load_asr

        asr = load_asr()
    options = SamplingOptions(temperature=settings.temperature, top_k=settings.top_k,
                              heard_intents=settings.heard_intents)
    threads = torch.get_num_threads()
    metrics: dict = {"model": str(model_dir), "settings": asdict(settings),
                     "parameters_m": model.num_parameters() / 1e6,
                     "speaks_with": "mouth" if model.mouth is not None else "audio steps",
                     "splits": {}}
    # teacher-forced losses: of the words alone where the pack has no answer word times and
    # the student's audio steps need them (a student speaking with its mouth uses none)
    forced = StudentTrainSettings(words_only=model.config.word_pointer
                                  and data.word_frames is None)
    all_rows = []
    for split in settings.splits:
        rows_idx = data.indices(split)[:settings.limit or None]
        if not len(rows_idx):
            continue
        rows = []
        for i in tqdm(rows_idx, desc=f"student eval {split}", unit="turn"):
            torch.set_num_threads(settings.threads)
            result = generate(model, tokenizer, data.user(i), options, settings.chunk_frames)
            torch.set_num_threads(threads)
            row = {"id": str(data.id[i]), "split": split, "intent": str(data.intent[i]),
                   "voice": str(data.user_voice[i]), "prompt_text": str(data.prompt_text[i]),
                   "asr_text": str(data.asr_text[i]), "answer_text": str(data.answer_text[i]),
                   "student_text": result.text, "frames": int(result.codes.shape[1]),
                   "generate_s": result.generate_s, "first_frame_s": result.first_frame_s}
            row["text_exact"] = answer_words(result.text) == answer_words(row["answer_text"])
            row["heard"] = result.heard
            row["heard_exact"] = answer_words(result.heard) == answer_words(row["prompt_text"])
            row["transcript"] = transcribe_codes(codec, asr, result.codes)
            row["correct"] = judge(row["answer_text"], row["transcript"])
            intended = str(data.intended_text[i])
            if intended:
                row["intended_text"] = intended
                row["correct_intended"] = judge(intended, row["transcript"])
                row["teacher_intended"] = (answer_words(str(data.teacher_text[i]))
                                           == answer_words(intended))
            if settings.ceiling:
                teacher = data.answer(i)[:model.config.k_out].astype(np.int64)
                row["teacher_transcript"] = transcribe_codes(codec, asr, teacher)
                row["teacher_correct"] = judge(row["answer_text"], row["teacher_transcript"])
            rows.append(row)
        tf = evaluate(model, data, rows_idx, forced, torch.device("cpu"))
        metrics["splits"][split] = _split_metrics(rows, tf, codec.frame_rate, settings.ceiling)
        all_rows += rows
    tf_all = evaluate(model, data, np.concatenate([data.indices(s)[:settings.limit or None]
                                                   for s in settings.splits]),
                      forced, torch.device("cpu"))
    metrics["all"] = _split_metrics(all_rows, tf_all, codec.frame_rate, settings.ceiling)
    metrics["kinds"] = answer_kinds(all_rows)
    write_judged(metrics, all_rows, out)
    return metrics


def judged_again(metrics: dict, rows: list[dict]) -> tuple[dict, list[dict]]:
    """A run's ``metrics`` and turn ``rows`` with every out-loud verdict judged again by
    ``judge`` from the saved transcripts (the judge changed, no model or audio did)."""
    rows = [{**r, "correct": judge(r["answer_text"], r["transcript"])}
            | ({"correct_intended": judge(r["intended_text"], r["transcript"])}
               if "correct_intended" in r else {})
            | ({"teacher_correct": judge(r["answer_text"], r["teacher_transcript"])}
               if "teacher_transcript" in r else {}) for r in rows]
    metrics = json.loads(json.dumps(metrics))
    for name, part in [*metrics["splits"].items(), ("all", metrics["all"])]:
        mine = [r for r in rows if name in ("all", r["split"])]
        part["correct_pct"] = 100 * float(np.mean([r["correct"] for r in mine]))
        if "correct_intended_pct" in part:
            part["correct_intended_pct"] = 100 * float(np.mean([r["correct_intended"]
                                                                for r in mine]))
        if "ceiling_correct_pct" in part:
            part["ceiling_correct_pct"] = _summary(mine, "teacher_")["correct_pct"]
        if "heard_exact_pct" in part:
            part.update(_by_hearing(mine))
    metrics["kinds"] = answer_kinds(rows)
    return metrics, rows


def write_judged(metrics: dict, rows: list[dict], out: Path) -> None:
    """``metrics.json``, ``turns.jsonl``, ``report.md`` and ``student-eval.png`` in ``out``."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "turns.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    (out / "report.md").write_text(format_report(metrics))
    _plot(metrics, rows, out / "student-eval.png")


def decode_codes(codec, codes: np.ndarray) -> np.ndarray:
    """``codes [K, F]`` decoded by ``codec``: float32 ``[T]`` at its sample rate (empty for
    no frames)."""
    import torch

    if codes.shape[1] == 0:
        return np.zeros(0, np.float32)
    with torch.no_grad():
        return codec.decode(torch.from_numpy(codes.astype(np.int64))[None])[0, 0].numpy()


def heard_in(asr, wav: np.ndarray, rate_hz: int) -> str:
    """What ``asr`` hears in ``wav`` float32 ``[T]`` ("" for no samples)."""
    return asr.transcribe(wav, rate_hz) if len(wav) else ""


def transcribe_codes(codec, asr, codes: np.ndarray) -> str:
    """What ``asr`` hears in ``codes [K, F]`` decoded by ``codec`` ("" for no frames)."""
    return heard_in(asr, decode_codes(codec, codes), codec.sample_rate)


def _split_metrics(rows: list[dict], teacher_forced: dict, frame_rate_hz: float,
                   ceiling: bool) -> dict:
    audio_s = sum(r["frames"] for r in rows) / frame_rate_hz
    gen_s = sum(r["generate_s"] for r in rows)
    first = [r["first_frame_s"] for r in rows if r["first_frame_s"] is not None]
    result = {**_summary(rows, ""),
              "text_exact_pct": 100 * float(np.mean([r["text_exact"] for r in rows])),
              "text_token_acc_pct": 100 * teacher_forced["text_acc"],
              "audio0_acc_pct": 100 * teacher_forced["audio0_acc"],
              "valid_loss": teacher_forced["total"],
              "speed_x_rt": audio_s / gen_s if gen_s else 0.0,
              "first_frame_ms_p50": 1000 * float(np.median(first)) if first else None,
              "first_frame_ms_p95": 1000 * float(np.percentile(first, 95)) if first else None}
    if rows and all("correct_intended" in r for r in rows):
        for key in ("correct_intended", "teacher_intended"):
            result[f"{key}_pct"] = 100 * float(np.mean([r[key] for r in rows]))
    if rows and all("heard_exact" in r for r in rows):
        result.update(_by_hearing(rows))
    if ceiling:
        teacher = _summary(rows, "teacher_")
        result["ceiling_correct_pct"], result["ceiling_wer_pct"] = (
            teacher["correct_pct"], teacher["wer_pct"])
    return result


def _by_hearing(rows: list[dict]) -> dict:
    """How often the student heard the user's words exactly (its CTC head), and how often
    it answered right out loud (against the intended answer where there is one) when it
    did and when it did not: where the words were heard, the answer is rarely wrong."""
    key = "correct_intended" if all("correct_intended" in r for r in rows) else "correct"
    heard = [r[key] for r in rows if r["heard_exact"]]
    misheard = [r[key] for r in rows if not r["heard_exact"]]
    return {"heard_exact_pct": 100 * len(heard) / len(rows),
            "correct_when_heard_pct": 100 * float(np.mean(heard)) if heard else None,
            "correct_when_misheard_pct": 100 * float(np.mean(misheard)) if misheard else None}


def composed_intents() -> set[str]:
    """The domain's compositional intents: their answers are ``composed`` (module doc)."""
    from voxloop.distill.teachers.domain.data import load_domain

    return {c["id"] for c in load_domain()["compositional"]}


def answer_kinds(rows: list[dict]) -> dict[str, dict]:
    """Turns with ``fixed`` and ``composed`` answers (module doc): n, correct %, words
    exact %, and the codec ceiling's correct % where it was judged."""
    composed = composed_intents()
    kinds = {}
    for kind, rows_of in (("fixed", [r for r in rows if r["intent"] not in composed]),
                          ("composed", [r for r in rows if r["intent"] in composed])):
        if not rows_of:
            continue
        kinds[kind] = {"n": len(rows_of),
                       "correct_pct": 100 * float(np.mean([r["correct"] for r in rows_of])),
                       "text_exact_pct": 100 * float(np.mean([r["text_exact"]
                                                              for r in rows_of]))}
        if all("teacher_correct" in r for r in rows_of):
            kinds[kind]["ceiling_correct_pct"] = 100 * float(np.mean(
                [r["teacher_correct"] for r in rows_of]))
    return kinds


def format_report(metrics: dict) -> str:
    threads = metrics.get("settings", {}).get("threads", 1)
    cols = [("correct_pct", "correct %"), ("wer_pct", "WER %"),
            ("text_exact_pct", "text exact %"), ("text_token_acc_pct", "text token acc %"),
            ("speed_x_rt", f"× RT ({threads} thread{'s' if threads != 1 else ''})"),
            ("first_frame_ms_p50", "first frame p50 ms"),
            ("ceiling_correct_pct", "codec ceiling correct %"),
            ("ceiling_wer_pct", "codec ceiling WER %"),
            ("correct_intended_pct", "correct vs intended %"),
            ("teacher_intended_pct", "teacher = intended %"),
            ("heard_exact_pct", "user's words heard exactly %"),
            ("correct_when_heard_pct", "correct where heard %"),
            ("correct_when_misheard_pct", "correct where misheard %")]
    speaks = metrics.get("speaks_with", "audio steps")
    lines = [f"Student {metrics['model']} ({metrics['parameters_m']:.1f} M parameters, "
             f"speaks with its {speaks})", "",
             "| split | n | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for name, m in [*metrics["splits"].items(), ("all", metrics["all"])]:
        cells = [f"{m[k]:.1f}" if isinstance(m.get(k), float) else str(m.get(k, "-"))
                 for k, _ in cols]
        lines.append(f"| {name} | {m['n']} | " + " | ".join(cells) + " |")
    if metrics.get("kinds"):
        lines += ["", "| answers | n | correct % | text exact % | codec ceiling correct % |",
                  "|---|---|---|---|---|"]
        for kind, m in metrics["kinds"].items():
            ceiling = f"{m['ceiling_correct_pct']:.1f}" if "ceiling_correct_pct" in m else "-"
            lines.append(f"| {kind} | {m['n']} | {m['correct_pct']:.1f} | "
                         f"{m['text_exact_pct']:.1f} | {ceiling} |")
    return "\n".join(lines) + "\n"


def _plot(metrics: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*metrics["splits"], "all"]
    ms = [metrics["splits"].get(n, metrics["all"]) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(names))
    bars = [("correct_pct", "student vs teacher"),
            ("correct_intended_pct", "student vs intended answer"),
            ("ceiling_correct_pct", "teacher codes vs teacher")]
    bars = [(key, label) for key, label in bars if key in ms[0]]
    width = 0.8 / len(bars)
    for j, (key, label) in enumerate(bars):
        ax1.bar(x + (j - (len(bars) - 1) / 2) * width, [m[key] for m in ms], width, label=label)
    ax1.axhline(80, color="k", ls="--", lw=1, label="target 80 %")
    ax1.set_xticks(x, names)
    ax1.set_ylabel("answers judged correct (%)")
    ax1.set_ylim(0, 100)
    ax1.legend()
    intents = sorted({r["intent"] for r in rows})
    acc = [100 * np.mean([r["correct"] for r in rows if r["intent"] == i]) for i in intents]
    order = np.argsort(acc)
    ax2.barh(np.arange(len(intents)), np.array(acc)[order])
    ax2.set_yticks(np.arange(len(intents)), np.array(intents)[order], fontsize=5)
    ax2.set_xlabel("correct % by intent (all held-out turns)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
