"""``voxloop distill synth | corpus | semantic``: build the distillation dataset and the codec
corpus, and train the semantic tokenizer on the dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from voxloop.codecs.semantic_config import SemanticConfig, SemanticTrainSettings
from voxloop.distill.data.corpus import CorpusSettings
from voxloop.distill.data.decoder_data import DecoderDataSettings
from voxloop.distill.data.plan import SynthSettings
from voxloop.distill.data.semantic_job import SemanticJobSettings
from voxloop.distill.data.turn_data import TurnDataSettings
from voxloop.distill.data.turn_train import TurnTrainSettings
from voxloop.distill.teachers.asr import ASRSettings
from voxloop.distill.teachers.llm import LLMSettings
from voxloop.settings import add_command, add_settings, command_group, settings_from_args

DISTILL_HELP = ("Distillation: synthesize the ASR -> LLM -> TTS dataset and the codec corpus, "
                "pack them and train the audio-native student.")
DISTILL_EXAMPLE = "voxloop distill synth --out data/distill-v2"


def distill_group(subparsers, groups: dict):
    """The ``voxloop distill`` group, shared by every module that adds an action to it."""
    return command_group(subparsers, groups, "distill", DISTILL_HELP, DISTILL_EXAMPLE)


def register(subparsers, groups: dict) -> None:
    p = add_command(
        distill_group(subparsers, groups), "synth",
        "Synthesize dialogue examples with the teachers (user TTS + augmentation -> ASR -> LLM "
        "-> assistant TTS -> codec) into resumable shards; re-encodes the stored audio when the "
        "codec changed.",
        "voxloop distill synth --out data/distill-v2 --shard 0/2   # and 1/2 in another shell")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan's example counts per split and exit")
    add_settings(p, SynthSettings)
    add_settings(p, ASRSettings)
    add_settings(p, LLMSettings)
    p.set_defaults(run=run_synth_command)

    p = add_command(distill_group(subparsers, groups), "corpus",
                    "Synthesize the codec training corpus from the teacher voices (resumes "
                    "where it stopped).", "voxloop distill corpus --out data/codec-corpus")
    add_settings(p, CorpusSettings)
    p.set_defaults(run=run_corpus)

    p = add_command(distill_group(subparsers, groups), "decoder-data",
                    "Cache audio and its frozen codec codes from datasets for training a "
                    "frame-rate decoder (voxloop codec train-decoder): the assistant voice's "
                    "answers (held-out texts by hash) or the user voices.",
                    "voxloop distill decoder-data --data data/distill-v1 data/distill-v2 "
                    "--out data/decoder-joe")
    add_settings(p, DecoderDataSettings)
    p.set_defaults(run=run_decoder_data)

    p = add_command(
        distill_group(subparsers, groups), "semantic",
        "Train the semantic tokenizer (Whisper tiny.en encoder + VQ) on a dataset's user audio "
        "and prompt words: train split trains, valid validates, held-out splits only measure. "
        "Uses the shards built so far; resumes where it stopped.",
        "voxloop distill semantic --data data/distill-v2 --out runs/semantic "
        "--export models/voxloop-semantic")
    add_settings(p, SemanticJobSettings)
    add_settings(p, SemanticTrainSettings)
    add_settings(p, SemanticConfig)
    p.set_defaults(run=run_semantic)

    p = add_command(
        distill_group(subparsers, groups), "end-of-turn",
        "Train semantic_vad's end-of-turn model: speak the plan's questions whole, cut at a "
        "word, with pauses and fillers (resumable shards of semantic tokens), train small "
        "heads over the tokenizer's codes, pooled vectors or encoder states (--inputs) and "
        "export their average (or the best on valid) with its card.",
        "voxloop distill end-of-turn --threads 1 --export models/voxloop-end-of-turn")
    add_settings(p, TurnDataSettings)
    add_settings(p, TurnTrainSettings)
    p.set_defaults(run=run_end_of_turn)

    p = add_command(
        distill_group(subparsers, groups), "end-of-turn-average",
        "Average the heads of several end-of-turn models (trained on the same tokenizer, "
        "e.g. on more data) into one model: measure each and the average on a data folder's "
        "evaluation splits and export the average with its card.",
        "voxloop distill end-of-turn-average runs/end-of-turn-v7 runs/end-of-turn-v8 "
        "--data data/end-of-turn-v8 --export models/voxloop-end-of-turn")
    p.add_argument("models", nargs="+", help="end-of-turn model names or folders")
    p.add_argument("--data", required=True,
                   help="`voxloop distill end-of-turn --data-out` folder to measure on")
    p.add_argument("--export", required=True, help="where the averaged model is written")
    p.set_defaults(run=run_end_of_turn_average)


def run_synth_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(SynthSettings, args)
    if args.dry_run:
        from voxloop.distill.data.plan import describe_plan

        print(describe_plan(settings))
        return 0
    from voxloop.distill.data.dataset import load_manifest
    from voxloop.distill.data.synth import run_synth

    folder = run_synth(settings, settings_from_args(ASRSettings, args),
                       settings_from_args(LLMSettings, args))
    manifest = load_manifest(folder)
    counts = ", ".join(f"{name} {info['examples_done']}/{info['examples']}"
                       for name, info in manifest["splits"].items())
    state = "complete" if manifest["complete"] else "this share done"
    print(f"{folder}: {state}; examples {counts}; codec {manifest['codec']['name']} "
          f"{manifest['codec']['sha256'][:12]}")
    return 0


def run_corpus(args: argparse.Namespace) -> int:
    from voxloop.distill.data.corpus import build_corpus

    print(f"corpus ready in {build_corpus(settings_from_args(CorpusSettings, args))}")
    return 0


def run_decoder_data(args: argparse.Namespace) -> int:
    from voxloop.distill.data.decoder_data import build_decoder_data

    settings = settings_from_args(DecoderDataSettings, args)
    summary = build_decoder_data(settings)
    print(f"{settings.out}: {summary['clips']['train']} training clips "
          f"({summary['hours']['train']:.2f} h), {summary['clips']['heldout']} held out")
    return 0


def run_semantic(args: argparse.Namespace) -> int:
    from voxloop.distill.data.semantic_job import run_semantic_job

    summary = run_semantic_job(
        settings_from_args(SemanticJobSettings, args), settings_from_args(SemanticConfig, args),
        settings_from_args(SemanticTrainSettings, args))
    for split, result in summary["results"].items():
        print(f"{split}: CER {100 * result['val_cer']:.1f}%, {result['codes_used']} codes used "
              f"(perplexity {result['code_perplexity']:.0f})")
    print(f"model in {summary.get('export') or Path(summary['settings']['out']) / 'model'}")
    return 0


def run_end_of_turn(args: argparse.Namespace) -> int:
    import torch

    from voxloop.distill.data.plan import parse_share
    from voxloop.distill.data.turn_build import build_turn_data
    from voxloop.distill.data.turn_train import train_end_of_turn

    data = settings_from_args(TurnDataSettings, args)
    train = settings_from_args(TurnTrainSettings, args)
    torch.set_num_threads(train.threads)
    folder = build_turn_data(data)
    index, count = parse_share(data.shard)
    if count > 1 and data.train_items:  # the other shares may still be building
        print(f"{folder}: share {index}/{count} built; when every share is, run the same "
              "command without --shard to train")
        return 0
    if data.train_items == 0:
        built, when = (f"share {index}/{count} of the evaluation splits",
                       "once every share is, ") if count > 1 else ("evaluation splits", "")
        print(f"{folder}: {built} built (--train-items 0: nothing to train); {when}measure a "
              f"model on them with voxloop eval end-of-turn --data {folder}")
        return 0
    summary = train_end_of_turn(data, train)
    for arch, result in summary["results"].items():
        held = result["splits"]["heldout_phrasing"]
        print(f"{arch}: valid loss {result['valid_loss']:.3f}, held-out phrasing accuracy "
              f"{100 * held['accuracy']:.1f}%, false cut-off {100 * held['false_cutoff']:.1f}%")
    print(f"chose {summary['chosen']}: {train.export}")
    return 0


def run_end_of_turn_average(args: argparse.Namespace) -> int:
    from voxloop.distill.data.turn_eval import average_end_of_turn
    from voxloop.distill.data.turn_train import measure_cells

    summary = average_end_of_turn(args.models, args.data, args.export)
    for name, result in summary["results"].items():
        for split, m in result["splits"].items():
            print(f"{name} ({result['heads']} heads) {split}: {measure_cells(m)}")
    print(f"averaged model in {args.export}")
    return 0
