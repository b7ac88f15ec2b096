"""``voxloop eval codec | student``: measure the codec and the student on held-out speech."""

from __future__ import annotations

import argparse
from dataclasses import replace

from voxloop.distill.evals.codec import CodecEvalSettings
from voxloop.distill.student.config import StudentEvalSettings
from voxloop.models import DEFAULT_CODEC, DEFAULT_STUDENT, in_repo
from voxloop.settings import add_command, add_settings, command_group, settings_from_args

EVAL_HELP = "Evaluations on held-out voices and phrasings, judged by an independent Whisper."
EVAL_EXAMPLE = "voxloop eval student --out out/student-eval"


def register(subparsers, groups: dict) -> None:
    group = command_group(subparsers, groups, "eval", EVAL_HELP, EVAL_EXAMPLE)
    p = add_command(group, "codec", "Measure a codec on held-out voices and texts: STOI, PESQ, "
                    "Whisper WER, bitrate and streaming real-time factor.",
                    "voxloop eval codec --codec models/voxloop-codec-16k --out out/codec-eval")
    p.add_argument("--codec", default=DEFAULT_CODEC, help="codec name or folder")
    p.add_argument("--decoder", default="auto", help="seanet, a shipped decoder (assistant, "
                   "general), a decoder folder, or auto")
    add_settings(p, CodecEvalSettings)
    p.set_defaults(run=run_codec_eval)

    p = add_command(group, "decoders", "Compare a codec's decoders on the same held-out clips "
                    "of a decoder data folder (the assistant voice's held-out sentences): STOI, "
                    "Whisper WER, decode-only speed on one thread.",
                    "voxloop eval decoders --data data/decoder-joe --decoders seanet assistant")
    p.add_argument("--codec", default=DEFAULT_CODEC, help="codec name or folder")
    p.add_argument("--data", default="data/decoder-joe", help="decoder data folder "
                   "(voxloop distill decoder-data): its held-out split is decoded")
    p.add_argument("--decoders", nargs="+", default=["seanet", "assistant"],
                   help="decoders to compare (seanet, shipped names, decoder folders)")
    p.add_argument("--codebooks", nargs="+", type=int, default=[4, 8], help="values of K")
    p.add_argument("--limit", type=int, default=0, help="at most this many clips (0: all)")
    p.add_argument("--out", default="out/decoder-eval", help="decoders.json and decoders.md")
    p.set_defaults(run=run_decoders_eval)

    p = add_command(group, "student", "Evaluate a student and the teacher cascade on the same "
                    "held-out turns: correct answers, WER, text accuracy, speed (JSON, report, "
                    "plot).", "voxloop eval student --out out/student-eval")
    p.add_argument("--model", default=DEFAULT_STUDENT, help="student model folder")
    add_settings(p, StudentEvalSettings)
    p.set_defaults(run=run_student_eval)


def run_codec_eval(args: argparse.Namespace) -> int:
    from voxloop.codecs.registry import load_codec
    from voxloop.distill.evals.codec import evaluate_codec, format_report

    settings = settings_from_args(CodecEvalSettings, args)
    settings = replace(settings, corpus=str(in_repo(settings.corpus)))  # from any folder
    metrics = evaluate_codec(load_codec(args.codec, decoder=args.decoder), settings)
    print(format_report(metrics))
    print(f"wrote {settings.out}/metrics.json and {settings.out}/spectrograms.png")
    return 0


def run_decoders_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.codec_decoders import (
        compare_decoders,
        format_decoder_table,
        write_decoder_report,
    )

    metrics = compare_decoders(args.codec, tuple(args.decoders), args.data,
                               tuple(args.codebooks), args.limit)
    print(format_decoder_table(metrics))
    print(f"wrote {write_decoder_report(metrics, args.out)}/decoders.json and decoders.md")
    return 0


def run_student_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.student import evaluate_student, format_report

    settings = settings_from_args(StudentEvalSettings, args)
    settings = replace(settings, data=str(in_repo(settings.data)))  # from any folder
    metrics = evaluate_student(args.model, settings)
    print(format_report(metrics))
    print(f"wrote {settings.out}/metrics.json, report.md, turns.jsonl and student-eval.png")
    return 0
