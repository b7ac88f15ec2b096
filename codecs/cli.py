"""``voxloop codec``: encode, decode and train (corpus and eval come from distill)."""

from __future__ import annotations

import argparse
import os

from voxloop.codecs.config import CodecConfig, CodecTrainSettings
from voxloop.codecs.decoder_config import DecoderTrainSettings, FrameDecoderConfig
from voxloop.models import DEFAULT_CODEC, DEFAULT_SEMANTIC
from voxloop.paths import output_file
from voxloop.settings import add_command, add_settings, command_group, settings_from_args

CODEC_HELP = "Neural audio codec: encode, decode, train."
CODEC_EXAMPLE = "voxloop codec encode question.wav question.npz"


def codec_group(subparsers, groups: dict):
    """The ``voxloop codec`` group, shared with the corpus and eval actions from distill."""
    return command_group(subparsers, groups, "codec", CODEC_HELP, CODEC_EXAMPLE)


def register(subparsers, groups: dict) -> None:
    group = codec_group(subparsers, groups)

    p = add_command(group, "encode", "Turn a wav file into codec tokens (npz).",
             "voxloop codec encode question.wav question.npz")
    p.add_argument("wav")
    p.add_argument("npz")
    p.add_argument("--codec", default=DEFAULT_CODEC, help="codec name or folder")
    p.add_argument("--codebooks", type=int, default=0,
                   help="keep the first K codebooks (default: all; the student speaks K = 4)")
    p.set_defaults(run=run_encode)

    p = add_command(group, "decode", "Turn codec tokens (npz) back into a wav file.",
             "voxloop codec decode question.npz question-decoded.wav")
    p.add_argument("npz")
    p.add_argument("wav")
    p.add_argument("--codec", default=DEFAULT_CODEC, help="codec name or folder")
    p.add_argument("--decoder", default="auto",
                   help="seanet (the codec's own), a trained decoder the codec ships (assistant: "
                        "the assistant's voice; general: any voice), a decoder folder, auto (the "
                        "best shipped one for any voice) or answers (for the assistant's voice)")
    p.set_defaults(run=run_decode)

    p = add_command(group, "semantic", "Turn a wav file into semantic tokens (npz): Whisper "
                    "tiny.en's encoder + one codebook, at the student's frame rate.",
                    "voxloop codec semantic question.wav question-semantic.npz")
    p.add_argument("wav")
    p.add_argument("npz")
    p.add_argument("--model", default=DEFAULT_SEMANTIC, help="semantic tokenizer name or folder")
    p.set_defaults(run=run_semantic)

    p = add_command(group, "train", "Train the compact codec on a corpus (resumes from OUT).",
             "voxloop codec train --corpus data/codec-corpus --out runs/codec --steps 9000")
    add_settings(p, CodecTrainSettings)
    add_settings(p, CodecConfig, prefix="codec")
    p.add_argument("--export", help="after training, bundle the codec into this folder")
    p.set_defaults(run=run_train)

    p = add_command(group, "train-decoder", "Train a frame-rate decoder (ConvNeXt + inverse "
                    "STFT) on a frozen codec's cached codes (resumes from OUT).",
                    "voxloop codec train-decoder --data data/decoder-joe --out "
                    "runs/decoder-assistant --max-minutes 35")
    add_settings(p, DecoderTrainSettings)
    add_settings(p, FrameDecoderConfig, prefix="decoder")
    p.add_argument("--export", help="after training, copy the decoder into this folder "
                   "(e.g. models/voxloop-codec-16k/decoders/assistant)")
    p.set_defaults(run=run_train_decoder)


def run_encode(args: argparse.Namespace) -> int:
    from voxloop.codecs.tokens import encode_file, written_npz

    output_file(written_npz(args.npz), ".npz", "the codes")
    info = encode_file(args.wav, args.npz, args.codec, args.codebooks)
    print(f"wrote {written_npz(args.npz)}: {info}")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from voxloop.codecs.tokens import decode_file

    output_file(args.wav, ".wav", "the audio")
    seconds = decode_file(args.npz, args.wav, args.codec, args.decoder)
    print(f"wrote {args.wav}: {seconds:.2f} s")
    return 0


def run_semantic(args: argparse.Namespace) -> int:
    from voxloop.codecs.semantic_tokens import semantic_file
    from voxloop.codecs.tokens import written_npz

    output_file(written_npz(args.npz), ".npz", "the tokens")
    info = semantic_file(args.wav, args.npz, args.model)
    print(f"wrote {written_npz(args.npz)}: {info}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from voxloop.codecs.train import export_checkpoint, train

    settings = settings_from_args(CodecTrainSettings, args)
    out = train(settings, settings_from_args(CodecConfig, args, prefix="codec"))
    if args.export and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 only
        export_checkpoint(out / "checkpoint.pt", args.export)
        print(f"bundled the codec into {args.export}")
    return 0


def run_train_decoder(args: argparse.Namespace) -> int:
    from voxloop.codecs.decoder_train import export_decoder, train_decoder

    out = train_decoder(settings_from_args(DecoderTrainSettings, args),
                        settings_from_args(FrameDecoderConfig, args, prefix="decoder"))
    print(f"decoder in {out / 'final'}")
    if args.export:
        export_decoder(out / "checkpoint.pt", args.export)
        print(f"exported the decoder to {args.export}")
    return 0
