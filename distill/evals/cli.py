"""``voxloop eval codec | decoders | mouth | student | votes | routing | heard-intents |
end-of-turn | compare``:
measure the codec, the student and the end-of-turn model on held-out speech, when the hybrid
hands a turn to the cascade, and two students against each other; ``voxloop distill
renditions | said | choose-mouth | sayings``: the judge picks the clearest answer takes
(where the mouth says an answer badly), the mouth understood most and the clearest way the
mouth says each answer it remembers."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from voxloop.distill.evals.codec import CodecEvalSettings
from voxloop.distill.student.config import StudentEvalSettings
from voxloop.models import DEFAULT_CODEC, DEFAULT_STUDENT, in_repo
from voxloop.paths import output_file, output_folder
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

    from voxloop.distill.evals.votes import VoteEvalSettings

    p = add_command(group, "votes", "A semantic student on the held-out spoken questions heard "
                    "on several alignments of its tokens, as the native engine's --native-votes "
                    "hears them: out loud and words right for each vote count and alignment.",
                    "voxloop eval votes --data data/distill-v2 --votes 1 3 4")
    p.add_argument("--model", default=DEFAULT_STUDENT, help="student folder or bundled name")
    add_settings(p, VoteEvalSettings)
    p.set_defaults(run=run_votes_eval)

    from voxloop.distill.evals.routing import RoutingSettings

    p = add_command(group, "routing", "When the hybrid engine hands a spoken turn to the "
                    "cascade: the student's words, their log-probability and the cascade's "
                    "answer on every turn; the threshold chosen on one split (valid) and the "
                    "hybrid measured on each.",
                    "voxloop eval routing --data data/distill-v2 --export")
    p.add_argument("--model", default=DEFAULT_STUDENT, help="student folder or bundled name")
    add_settings(p, RoutingSettings)
    p.set_defaults(run=run_routing_eval)

    from voxloop.distill.data.cli import distill_group
    from voxloop.distill.evals.renditions import RenditionSettings

    p = add_command(distill_group(subparsers, groups), "renditions",
                    "Re-take the answers a student says most (the fixed ones): synthesize more "
                    "takes of each, judge each through the codec with Whisper, keep the "
                    "clearest in the dataset and the pack (word times aligned anew).",
                    "voxloop distill renditions data/distill-v2 runs/student/aligned.npz")
    p.add_argument("dataset", help="dataset folder (voxloop distill synth): its answer cache")
    p.add_argument("npz", help="a pack made from it with --targets intended; updated in place")
    add_settings(p, RenditionSettings)
    p.set_defaults(run=run_renditions)

    p = add_command(distill_group(subparsers, groups), "said",
                    "Copy an aligned pack with every answer as a student's mouth says it now "
                    "(its codes and word lengths): `renditions --misheard-only` on the copy "
                    "re-takes only what the mouth says badly, and a mouth fine-tuned on it "
                    "keeps saying the rest as it does.",
                    "voxloop distill said voxloop-student runs/student/aligned.npz "
                    "runs/student/said.npz")
    p.add_argument("student", help="a student with a mouth: a model folder or bundled name")
    p.add_argument("npz", help="an aligned pack tokenized with its words (--vocab-from)")
    p.add_argument("out", help="the said pack to write")
    p.add_argument("--batch-size", type=int, default=32, help="answers said at once")
    p.set_defaults(run=run_said)

    from voxloop.distill.evals.sayings import SayingSettings

    p = add_command(distill_group(subparsers, groups), "sayings",
                    "Judge how a student's mouth says every answer it remembers (through the "
                    "codec, by Whisper), say the misheard ones other ways (paces, predicted "
                    "word lengths, sampled codes) and keep the clearest as the folder's "
                    "said_codes.safetensors, which the engine and the evals read; answers it "
                    "may say but never learned (the refusal) are recorded there in the "
                    "assistant's voice.",
                    "voxloop distill sayings models/voxloop-student --report out/sayings.json")
    p.add_argument("student", help="a student folder with a mouth (rewritten in place)")
    p.add_argument("--report", help="also write every answer's sayings and verdicts here (JSON)")
    add_settings(p, SayingSettings)
    p.set_defaults(run=run_sayings)

    p = add_command(distill_group(subparsers, groups), "choose-mouth",
                    "Judge every mouth a `voxloop distill mouth --snapshot-every N` run kept, "
                    "by ear (said through the codec, transcribed by Whisper) on the valid "
                    "answers, and keep the one understood most as RUN/chosen.pt (the valid "
                    "loss does not rank mouths by that).",
                    "voxloop distill choose-mouth runs/mouth --data runs/student/aligned.npz "
                    "--student runs/student/export --export models/voxloop-student")
    p.add_argument("folder", metavar="RUN",
                   help="a `voxloop distill mouth` run folder (snapshots/, best.pt)")
    p.add_argument("--data", required=True, help="the aligned pack the mouth learned from")
    p.add_argument("--student", default=DEFAULT_STUDENT,
                   help="the student whose words the mouths say")
    p.add_argument("--splits", nargs="+", default=["valid"], help="splits whose answers judge")
    p.add_argument("--composed", type=int, default=60,
                   help="composed answers judged (spread over the splits'; all fixed ones are)")
    p.add_argument("--decoder", default="answers", help="the codec's decoder")
    p.add_argument("--threads", type=int, default=1, help="torch and Whisper threads")
    p.add_argument("--export", help="write the student with the chosen mouth into this folder")
    p.set_defaults(run=run_choose_mouth)

    p = add_command(group, "mouth", "Judge how clearly a student's mouth says the held-out "
                    "answers from their own words (its ears left out), beside the pack's takes "
                    "of them: fixed and composed answers (JSON, table). Minutes, for comparing "
                    "mouths.", "voxloop eval mouth --data runs/student/aligned.npz")
    p.add_argument("--model", default=DEFAULT_STUDENT, help="student model folder")
    p.add_argument("--data", required=True, help="packed .npz with the held-out splits")
    p.add_argument("--out", default="out/mouth-eval", help="mouth.json and answers.jsonl")
    p.add_argument("--splits", nargs="+", default=["heldout_voice", "heldout_phrasing"])
    p.add_argument("--decoder", default="answers", help="the codec's decoder")
    p.add_argument("--threads", type=int, default=1, help="torch and Whisper threads")
    p.set_defaults(run=run_mouth_eval)

    p = add_command(group, "student", "Evaluate a student and the teacher cascade on the same "
                    "held-out turns: correct answers, WER, text accuracy, speed (JSON, report, "
                    "plot).", "voxloop eval student --out out/student-eval")
    p.add_argument("--model", default=DEFAULT_STUDENT, help="student model folder")
    add_settings(p, StudentEvalSettings)
    p.set_defaults(run=run_student_eval)

    from voxloop.distill.evals.heard_intents import HeardIntentsEvalSettings

    p = add_command(group, "heard-intents", "How often a student's heard-intents head would "
                    "fix its words and how often break them, on a pack's valid turns, for each "
                    "pair of thresholds (the head fitted without the phrasings it reads; "
                    "JSON and a table). About a minute.",
                    "voxloop eval heard-intents --data runs/student/aligned.npz")
    p.add_argument("--model", default=DEFAULT_STUDENT, help="student model folder")
    add_settings(p, HeardIntentsEvalSettings)
    p.set_defaults(run=run_heard_intents_eval)

    p = add_command(group, "end-of-turn", "Measure an end-of-turn model on the evaluation "
                    "splits of end-of-turn data built with its tokenizer: accuracy, false "
                    "cut-offs, fast answers, the median wait (a table, and JSON).",
                    "voxloop eval end-of-turn --model models/voxloop-end-of-turn "
                    "--data data/end-of-turn")
    p.add_argument("--model", default="voxloop-end-of-turn", help="model name or folder")
    p.add_argument("--data", default="data/end-of-turn",
                   help="`voxloop distill end-of-turn --data-out` folder")
    p.add_argument("--out", default="out/end-of-turn-eval.json", help="the table as JSON")
    p.set_defaults(run=run_end_of_turn_eval)

    p = add_command(group, "compare", "Two `eval student` runs on the same held-out turns, "
                    "side by side: correct % before and after, the turns gained and lost, "
                    "and the exact McNemar p of that split, per split and measure (out loud, "
                    "words).", "voxloop eval compare out/student-eval out/student-eval-new")
    p.add_argument("before", help="an `eval student --out` folder (turns.jsonl)")
    p.add_argument("after", help="another, evaluated on the same --data")
    p.add_argument("--out", default="out/student-compare.json", help="the table as JSON")
    p.set_defaults(run=run_compare)


def run_codec_eval(args: argparse.Namespace) -> int:
    from voxloop.codecs.registry import load_codec
    from voxloop.distill.evals.codec import evaluate_codec, format_report

    settings = settings_from_args(CodecEvalSettings, args)
    output_folder(settings.out)
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

    output_folder(args.out)
    metrics = compare_decoders(args.codec, tuple(args.decoders), args.data,
                               tuple(args.codebooks), args.limit)
    print(format_decoder_table(metrics))
    print(f"wrote {write_decoder_report(metrics, args.out)}/decoders.json and decoders.md")
    return 0


def run_student_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.student import evaluate_student, format_report

    settings = settings_from_args(StudentEvalSettings, args)
    output_folder(settings.out)
    settings = replace(settings, data=str(in_repo(settings.data)))  # from any folder
    metrics = evaluate_student(args.model, settings)
    print(format_report(metrics))
    print(f"wrote {settings.out}/metrics.json, report.md, turns.jsonl and student-eval.png")
    return 0


def run_heard_intents_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.heard_intents import (
        HeardIntentsEvalSettings,
        format_report,
        measure_heard_intents,
    )

    settings = settings_from_args(HeardIntentsEvalSettings, args)
    output_folder(settings.out)
    settings = replace(settings, data=str(in_repo(settings.data)))  # from any folder
    print(format_report(measure_heard_intents(args.model, settings)))
    print(f"wrote {settings.out}/heard-intents.json and heard-intents.md")
    return 0


def run_votes_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.votes import VoteEvalSettings, evaluate_votes, format_votes

    settings = settings_from_args(VoteEvalSettings, args)
    output_folder(settings.out)
    result = evaluate_votes(args.model, replace(settings, data=str(in_repo(settings.data))))
    print(format_votes(result))
    print(f"wrote {settings.out}/votes.json, votes.md and turns.jsonl")
    return 0


def run_routing_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.routing import RoutingSettings, evaluate_routing
    from voxloop.distill.evals.routing_report import format_routing

    settings = settings_from_args(RoutingSettings, args)
    output_folder(settings.out)
    result = evaluate_routing(args.model, replace(settings, data=str(in_repo(settings.data))))
    print(format_routing(result))
    print(f"wrote {settings.out}/routing.json, routing.md"
          + ("" if settings.rescore else ", turns.jsonl") + " and routing.png"
          + ("; the threshold beside the student's weights" if settings.export else ""))
    return 0


def run_end_of_turn_eval(args: argparse.Namespace) -> int:
    import json

    from voxloop.distill.data.turn_eval import evaluate_end_of_turn, format_evaluation

    output_file(args.out, ".json", "the table", "--out")
    result = evaluate_end_of_turn(args.model, args.data)
    print(format_evaluation(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.compare import compare, format_table, load_turns, write_comparison

    output_file(args.out, ".json", "the table", "--out")
    rows = compare(load_turns(args.before), load_turns(args.after))
    print(format_table(rows, args.before, args.after))
    print(f"wrote {write_comparison(rows, args.before, args.after, args.out)}")
    return 0


def run_renditions(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.renditions import RenditionSettings, choose_renditions
    from voxloop.distill.student.retaken import report_path

    report = choose_renditions(args.dataset, args.npz,
                               settings_from_args(RenditionSettings, args))
    s = report["summary"]
    print(f"{s['answers']} answers re-taken, {s['replaced']} replaced "
          f"({s['turns_changed']} turns): judged right {s['correct_before']} -> "
          f"{s['correct_after']} (some take right: {s['any_take_correct']}), mean WER "
          f"{s['wer_before_pct']:.1f} -> {s['wer_after_pct']:.1f} %")
    print(f"wrote {args.npz}, {args.dataset}/renditions.npz and {report_path(args.npz)}")
    return 0


def run_said(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.said import said_pack

    path, n = said_pack(args.student, args.npz, args.out, args.batch_size)
    print(f"wrote {path}: {n} distinct answers as {args.student}'s mouth says them")
    return 0


def run_sayings(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.sayings import SayingSettings, choose_sayings, write_report

    report = choose_sayings(args.student, settings_from_args(SayingSettings, args))
    s = report["summary"]
    print(f"{s['answers']} remembered answers judged: right {s['right_now']} -> "
          f"{s['right_chosen']}, and under every noisy listen {s['steady_now']} -> "
          f"{s['steady_chosen']}; {s['answers_said_other_ways']} said other ways")
    if s["answers_kept_unjudged"]:
        why = f"right in {args.again_from}" if args.again_from else "--recorded-only"
        print(f"{s['answers_kept_unjudged']} more kept as they were ({why})")
    if s["answers_said_other_ways"]:
        print(f"  of those: right {s['correct_before']} -> {s['correct_after']} (some way "
              f"right: {s['any_take_correct']}), mean WER {s['wer_before_pct']:.1f} -> "
              f"{s['wer_after_pct']:.1f} %; chosen: {s['chosen_ways']}")
    if s["answers_recorded"]:
        print(f"{s['answers_recorded']} answers the mouth never learned recorded in the "
              f"assistant's voice: {s['recorded_right']} heard right")
    print(f"wrote {Path(report['folder']) / 'said_codes.safetensors'}")
    if args.report:
        print(f"wrote {write_report(report, args.report)}")
    return 0


def run_choose_mouth(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.mouth import choose_mouth, format_choice
    from voxloop.distill.student.mouth_files import give_mouth

    report = choose_mouth(args.folder, args.student, in_repo(args.data), tuple(args.splits),
                          args.composed, args.decoder, args.threads)
    print(format_choice(report))
    print(f"chose {report['chosen']}: copied to {Path(args.folder) / 'chosen.pt'}")
    if args.export:
        give_mouth(args.student, Path(args.folder) / "chosen.pt", args.export)
        print(f"wrote {args.export}: {args.student} with the chosen mouth")
    return 0


def run_mouth_eval(args: argparse.Namespace) -> int:
    from voxloop.distill.evals.mouth import evaluate_mouth, format_mouth

    output_folder(args.out)
    metrics = evaluate_mouth(args.model, in_repo(args.data), args.out, tuple(args.splits),
                             args.decoder, args.threads)
    print(format_mouth(metrics))
    print(f"wrote {args.out}/mouth.json and {args.out}/answers.jsonl")
    return 0
