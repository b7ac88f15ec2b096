"""``voxloop distill pack | align | train | mouth | remember-lengths | said-codes |
heard-intents | audio-intents | residual-levels | export``: the audio-native student."""

from __future__ import annotations

import argparse
import os

from voxloop.audio import MODEL_RATE_HZ
from voxloop.distill.student.config import (
    TARGETS,
    AudioIntentsTrainSettings,
    HeardIntentsConfig,
    MouthTrainSettings,
    StudentConfig,
    StudentTrainSettings,
)
from voxloop.errors import VoxloopError
from voxloop.models import DEFAULT_SEMANTIC
from voxloop.settings import add_command, add_settings, settings_from_args


def register(subparsers, groups: dict) -> None:
    from voxloop.distill.data.cli import distill_group

    group = distill_group(subparsers, groups)
    p = add_command(group, "pack", "Pack a dataset folder into one codes-only .npz (no audio) "
                    "with the student's vocabularies, e.g. to train on another machine.",
                    "voxloop distill pack data/distill-v1 data/distill-v1-codes.npz")
    p.add_argument("dataset", help="dataset folder (voxloop distill synth)")
    p.add_argument("npz", help="output file")
    p.add_argument("--valid-every", type=int, default=0, help="while the dataset has no valid "
                   "split yet, use every Nth training turn as valid (0: never)")
    p.add_argument("--targets", choices=TARGETS, default="teacher",
                   help="answer to train on: what the cascade said, or what the prompt asked "
                   "for (the scripted teacher's answer to the prompt as written)")
    p.add_argument("--corpus", metavar="CORPUS_DIR", help="with --targets intended: also "
                   "train on the questions of this codec corpus's train split")
    p.add_argument("--extra-train", metavar="DATASET", nargs="+", default=[],
                   help="more dataset folders (built with another --seed, e.g. more voices "
                   "for some --intents) whose train turns join the train split; validation "
                   "and the held-out splits stay DATASET's")
    words = p.add_mutually_exclusive_group()
    words.add_argument("--vocab-from", metavar="MODEL_DIR", help="tokenize with this "
                       "student's vocabularies instead of building new ones, and hear its "
                       "residual levels if it has any (to evaluate it)")
    words.add_argument("--keep-words-of", metavar="MODEL_DIR", help="build vocabularies that "
                       "hold this student's words too, so that --init-from fine-tunes it on "
                       "the pack (the pack's new words start untrained)")
    p.add_argument("--user-input", choices=("codes", "semantic"), default="codes",
                   help="what the student hears: the dataset's codec codes, or semantic tokens "
                   "of its 16 kHz user audio (a semantic student)")
    p.add_argument("--semantic", metavar="TOKENIZER", default=None,
                   help="with --user-input semantic: the tokenizer, a folder or bundled name "
                   f"(default {DEFAULT_SEMANTIC})")
    p.add_argument("--batch-size", type=int, default=32,
                   help="clips tokenized at once (--user-input semantic)")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes computing semantic tokens (one thread each; one per core "
                        "is fastest). Tokens are cached per shard under "
                        "DATASET/semantic-tokens/, so a repack or a killed pack reuses them")
    p.add_argument("--train-skips-ms", type=float, nargs="+", default=[0.0], metavar="MS",
                   help="with --user-input semantic: pack every train turn once per skip, "
                   "heard from that many ms in (under one token, e.g. 0 20: the token grid "
                   "on two alignments, as strangers' turns fall on it); tokens cached per "
                   "skip. Validation and held-out turns are heard from the start")
    p.add_argument("--splits", nargs="+", default=[], metavar="SPLIT",
                   help="pack only these splits of DATASET (default: all); without train, "
                        "with --vocab-from (to evaluate a student on the held-out ones)")
    p.add_argument("--align", action="store_true", help="also time every answer word "
                   "(voxloop distill align, with --jobs Whisper threads), which a "
                   "--student-word-pointer student and a mouth need")
    p.set_defaults(run=run_pack)

    p = add_command(group, "align", "Time every answer word of a pack in its audio (forced "
                    "alignment by the ASR teacher's Whisper), for a --student-word-pointer "
                    "student. Each distinct answer is aligned once.",
                    "voxloop distill align data/distill-v1-codes.npz data/distill-v1")
    p.add_argument("npz", help="a pack (voxloop distill pack); the word times are added to it")
    p.add_argument("dataset", help="the dataset folder it was packed from (its answer audio)")
    p.add_argument("--threads", type=int, default=1, help="Whisper CPU threads")
    p.set_defaults(run=run_align)

    p = add_command(group, "train", "Train the audio-native student (resumes from --out).",
                    "voxloop distill train --data data/distill-v1 --out runs/student "
                    "--export models/voxloop-student")
    add_settings(p, StudentTrainSettings)
    add_settings(p, StudentConfig, prefix="student")
    p.add_argument("--export", help="after training, bundle the best model into this folder")
    p.set_defaults(run=run_train)

    p = add_command(group, "mouth", "Train a student's mouth, which says its answer words all "
                    "at once (every frame from the whole sentence, none fed back), on an aligned "
                    "pack; resumes from --out.",
                    "voxloop distill mouth --data data/distill-v1-codes.npz --student "
                    "voxloop-student --out runs/mouth --export models/voxloop-student")
    add_settings(p, MouthTrainSettings)
    p.add_argument("--export", help="after training, write the student with the best mouth "
                   "into this folder (it may be the student's own)")
    p.set_defaults(run=run_mouth)

    p = add_command(group, "remember-lengths", "Give a student's mouth the word lengths of "
                    "a pack's train answers: it says those answers at their takes' lengths, "
                    "at which it learned them (a mouth `voxloop distill mouth` trains has them "
                    "already).",
                    "voxloop distill remember-lengths voxloop-student runs/student/aligned.npz "
                    "models/voxloop-student")
    p.add_argument("student", help="a student with a mouth: a model folder or bundled name")
    p.add_argument("npz", help="the aligned pack its mouth was trained on")
    p.add_argument("folder", help="model folder to write (it may be the student's own)")
    p.set_defaults(run=run_remember_lengths)

    p = add_command(group, "said-codes", "Say every answer a student's mouth remembers and "
                    "keep the codes beside its weights (said_codes.safetensors), so the engine "
                    "has a known answer's frames without running the mouth. Saving a student "
                    "does this already; this is for a folder from before, or one whose weights "
                    "were replaced.", "voxloop distill said-codes models/voxloop-student")
    p.add_argument("folder", help="a student model folder")
    p.add_argument("--from", dest="source", metavar="FOLDER", help="keep this student's "
                   "table instead (its sayings, chosen by ear), if FOLDER's mouth is the "
                   "same, tensor for tensor: after a words-only fine-tune")
    p.set_defaults(run=run_said_codes)

    p = add_command(group, "heard-intents", "Fit the head that reads which fixed answer the "
                    "user asked for from the words a student heard (a bag of words over its "
                    "CTC transcript, fitted on the domain's training phrasings and misheard "
                    "copies of them, ~15 s) and write it beside the student's weights "
                    "(heard_intents.safetensors): where the head is sure of a fixed answer the "
                    "student did not write and all but rules out the student's own, it says "
                    "that one.",
                    "voxloop distill heard-intents models/voxloop-student")
    p.add_argument("folder", help="a student model folder (with a mouth)")
    add_settings(p, HeardIntentsConfig)
    p.set_defaults(run=run_heard_intents)

    p = add_command(group, "audio-intents", "Train the head that reads which intent the user "
                    "asked for from the sound of the whole question (a keyword spotter over "
                    "the tokens the student hears; its pack's train turns plus the domain's "
                    "more phrasings and questions outside it spoken by training voices, ~20 "
                    "min on one thread) and "
                    "write it beside the student's weights (audio_intents.safetensors): the "
                    "heard-intents head then reads its probabilities with the words'.",
                    "voxloop distill audio-intents models/voxloop-student --data PACK.npz")
    p.add_argument("folder", help="a student model folder (with a heard-intents head)")
    add_settings(p, AudioIntentsTrainSettings)
    p.set_defaults(run=run_audio_intents)

    p = add_command(group, "residual-levels", "Let a semantic student hear what its "
                    "tokenizer's tokens leave out: fit residual levels (k-means books of the "
                    "rests of a dataset's train turns) and write the same student hearing "
                    "them (no weight trained: its words and mouth as they were, its mouth's "
                    "sayings kept).", "voxloop distill residual-levels models/voxloop-student "
                    "runs/student-rvq --data data/distill-v2")
    p.add_argument("student", help="a semantic student hearing one token per frame")
    p.add_argument("folder", help="model folder to write")
    p.add_argument("--data", required=True, help="dataset folder whose train turns (their "
                   "user audio) the books are fitted on")
    p.add_argument("--levels", type=int, default=3, help="residual levels (1 to 3)")
    p.add_argument("--weight", type=float, default=0.5, help="how much of the residual "
                   "codes' vectors the student hears beside its token's (chosen on valid)")
    p.add_argument("--turns", type=int, default=1536, help="train turns to fit on")
    p.add_argument("--seed", type=int, default=0, help="which shards, and k-means' start")
    p.set_defaults(run=run_residual_levels)

    p = add_command(group, "export", "Bundle a training checkpoint as a float16 model folder "
                    "(with a mouth: its known answers said into said_codes.safetensors too, "
                    "~20 s).",
                    "voxloop distill export runs/student/best.pt models/voxloop-student")
    p.add_argument("checkpoint", help="best.pt or checkpoint.pt of a run")
    p.add_argument("folder", help="model folder to write")
    p.set_defaults(run=run_export)


def run_pack(args: argparse.Namespace) -> int:
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.pack import PackedData, dataset_progress, pack_dataset
    from voxloop.distill.student.residual_levels import residual_books

    vocab, books = None, []
    if args.vocab_from:  # its words, and the residual levels it hears (if any)
        model, vocab = load_student(args.vocab_from)
        books = residual_books(model)
    keep = load_student(args.keep_words_of)[1] if args.keep_words_of else None
    for folder in (args.dataset, *args.extra_train):
        print(f"{folder}: {dataset_progress(folder)}")
    path = pack_dataset(args.dataset, args.npz, valid_every=args.valid_every, vocab=vocab,
                        targets=args.targets, corpus=args.corpus, user_input=args.user_input,
                        semantic=args.semantic, batch_size=args.batch_size, jobs=args.jobs,
                        progress=True, keep_vocab=keep, extra_train=tuple(args.extra_train),
                        train_skips_samples=tuple(round(ms * MODEL_RATE_HZ / 1000)
                                                  for ms in args.train_skips_ms),
                        splits=tuple(args.splits), residual_books=books)
    if args.align:
        run_align(argparse.Namespace(npz=path, dataset=args.dataset, threads=args.jobs))
    data = PackedData.load(path)
    counts = {s: int((data.split == s).sum()) for s in sorted(set(data.split.tolist()))}
    heard = "codec codes"
    if data.user_input == "semantic":
        info = data.vocab["semantic"]
        heard = f"semantic tokens of {info['name']} ({info['frame_rate_hz']:g} Hz)"
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {counts}, "
          f"{len(data.vocab['text'])} answer words, {len(data.vocab['ctc'])} user words, "
          f"user turns as {heard}")
    return 0


def run_align(args: argparse.Namespace) -> int:
    from voxloop.distill.student.align import align_pack

    done = align_pack(args.npz, args.dataset, threads=args.threads)
    print(f"{args.npz}: {done['words']} answer words timed ({done['answers']} distinct answers)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from voxloop.distill.student.train import export_student, train

    settings = settings_from_args(StudentTrainSettings, args)
    out = train(settings, settings_from_args(StudentConfig, args, prefix="student"))
    if args.export and os.environ.get("RANK", "0") == "0":
        export_student(out / "best.pt", args.export)
        print(f"bundled the best student into {args.export}")
    return 0


def run_mouth(args: argparse.Namespace) -> int:
    from voxloop.distill.student.mouth_files import give_mouth
    from voxloop.distill.student.mouth_train import train_mouth

    settings = settings_from_args(MouthTrainSettings, args)
    out = train_mouth(settings)
    if args.export:
        give_mouth(settings.student, out / "best.pt", args.export)
        print(f"wrote {args.export}: {settings.student} with the mouth of {out / 'best.pt'}")
    return 0


def run_remember_lengths(args: argparse.Namespace) -> int:
    from voxloop.distill.student.mouth_train import remember_lengths

    folder, n = remember_lengths(args.student, args.npz, args.folder)
    print(f"wrote {folder}: {args.student}, its mouth remembering the word lengths of "
          f"{n} answers")
    return 0


def run_said_codes(args: argparse.Namespace) -> int:
    from voxloop.distill.student.model import student_folder
    from voxloop.distill.student.said_codes import (
        SAID_CODES_FILE,
        carry_said_codes,
        write_said_codes,
    )

    folder = student_folder(args.folder)
    if args.source:
        kept = carry_said_codes(student_folder(args.source), folder)
        print(f"wrote {folder / SAID_CODES_FILE}: {kept} answers, said as {args.source} says "
              "them")
        return 0
    said = write_said_codes(folder, progress=True)
    print(f"wrote {folder / SAID_CODES_FILE}: {said} answers" if said else
          f"{folder}: its student remembers no answers (no mouth, or none remembered); "
          "nothing to say")
    return 0


def run_heard_intents(args: argparse.Namespace) -> int:
    from voxloop.distill.student.heard_intents import fit_heard_intents, save_heard_intents
    from voxloop.distill.student.model import load_student, student_folder

    folder = student_folder(args.folder)
    model, vocab = load_student(folder)
    if model.mouth is None:
        raise VoxloopError(f"{folder}: this student has no mouth, so it can only say the "
                           "words it writes; a heard-intents head would never be used")
    config = settings_from_args(HeardIntentsConfig, args)
    head = fit_heard_intents(vocab["ctc"], config)
    path = save_heard_intents(head, folder)
    print(f"wrote {path}: {len(head.names)} word features x {len(head.labels)} intents "
          f"({len(head.answers)} with a fixed answer); it overrides words at most "
          f"{config.max_logprob:g} in log-probability where it is {config.min_prob:g} sure "
          f"and gives them at most {config.max_own_prob:g}; slot values heard lean "
          f"{config.slot_bonus:g} in logit")
    return 0


def run_audio_intents(args: argparse.Namespace) -> int:
    from voxloop.distill.student.audio_intents import save_audio_intents
    from voxloop.distill.student.audio_intents_train import train_audio_intents
    from voxloop.distill.student.model import load_student, student_folder

    folder = student_folder(args.folder)
    settings = settings_from_args(AudioIntentsTrainSettings, args)
    if not settings.data:
        raise VoxloopError("--data: give the student's aligned pack (its train turns)")
    model, vocab = load_student(folder)
    if model.heard_intents is None:
        raise VoxloopError(f"{folder} has no heard-intents head to read this one with: fit "
                           f"it first (`voxloop distill heard-intents {args.folder}`)")
    head, report = train_audio_intents(model, vocab, settings)
    path = save_audio_intents(head, folder)
    refused = report["outside_refused"]
    more = report["more_valid_accuracy"]
    print(f"wrote {path}: {report['labels']} intents from {report['train_turns']} turns; "
          f"valid accuracy {100 * report['valid_accuracy']:.1f} %"
          + ("" if more != more else f", on kept-out phrasings {100 * more:.1f} %")
          + "; kept-out questions "
          "outside the domain " + ("not asked" if refused != refused else
                                   f"taken for the refusal {100 * refused:.1f} %"))
    return 0


def run_residual_levels(args: argparse.Namespace) -> int:
    from voxloop.distill.student.model import load_student, save_student, student_folder
    from voxloop.distill.student.residual_levels import (
        add_residual_levels,
        check_widening,
        fit_residual_levels,
        train_clips,
    )
    from voxloop.distill.student.said_codes import SAID_CODES_FILE, carry_said_codes
    from voxloop.distill.student.user_tokens import load_student_semantic

    source = student_folder(args.student)
    model, vocab = load_student(source)
    check_widening(model.config, args.levels, args.weight)  # before minutes of fitting
    tokenizer = load_student_semantic(None, vocab, model)
    clips = train_clips(args.data, args.turns, args.seed)
    books = fit_residual_levels(tokenizer, clips, args.levels, seed=args.seed, progress=True)
    wide, wide_vocab = add_residual_levels(model, vocab, tokenizer, books, args.weight)
    keep = (source / SAID_CODES_FILE).is_file()  # its mouth is the same: its sayings too
    folder = save_student(wide, wide_vocab, args.folder, say=not keep)
    kept = carry_said_codes(source, folder) if keep else 0
    print(f"wrote {folder}: {args.levels} residual levels of {books[0].shape[0]} codes "
          f"(fitted on {len(clips)} turns of {args.data}), heard at {args.weight:g}; "
          f"{kept} sayings kept from {source}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from voxloop.distill.student.train import export_student

    print(f"wrote {export_student(args.checkpoint, args.folder)}")
    return 0

