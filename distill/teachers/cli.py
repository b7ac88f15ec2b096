"""Subcommands for the teachers: ``voxloop tts``, ``asr``, ``llm`` and the cascade ``demo``."""

from __future__ import annotations

import argparse
import sys
import time

from voxloop.distill.teachers.asr import ASRSettings
from voxloop.distill.teachers.llm import LLMSettings
from voxloop.distill.teachers.tts import ASSISTANT_VOICE
from voxloop.paths import output_file
from voxloop.settings import add_command, add_settings, settings_from_args

DEMO_QUESTION = "What is the capital of France?"
DEMO_USER_VOICE = "festival:slt-hts"


def register(subparsers, groups: dict) -> None:
    p = add_command(subparsers, "tts", "Speak text with a catalogued voice, or list the voices.",
                'voxloop tts --voice flite:slt --text "hello there" --out hello.wav')
    p.add_argument("--list-voices", action="store_true", help="list the voices and exit")
    p.add_argument("--all", action="store_true", help="with --list-voices: show missing ones too")
    p.add_argument("--voice", default=ASSISTANT_VOICE, help="voice name (see --list-voices)")
    p.add_argument("--text", help="what to say")
    p.add_argument("--out", help="output wav file")
    p.set_defaults(run=run_tts)

    p = add_command(subparsers, "asr", "Transcribe a wav file and print the text.",
                "voxloop asr question.wav")
    p.add_argument("wav", help="audio file (wav, flac, ogg)")
    add_settings(p, ASRSettings)
    p.set_defaults(run=run_asr)

    p = add_command(subparsers, "llm", "Answer one user text with the teacher language model.",
                'voxloop llm "what is seven plus five"')
    p.add_argument("text", help="what the user said")
    p.add_argument("--explain", action="store_true", help="also print the matched intent")
    add_settings(p, LLMSettings)
    p.set_defaults(run=run_llm)

    p = add_command(subparsers, "demo", "Speak a question, answer it with ASR -> LLM -> TTS, "
                "save the answer and print each stage's time.",
                'voxloop demo --question "how many legs does a spider have" --out answer.wav')
    p.add_argument("--question", default=DEMO_QUESTION, help="the question text")
    p.add_argument("--voice", default=DEMO_USER_VOICE, help="the user's voice")
    p.add_argument("--out", default="demo-answer.wav", help="where to write the answer")
    add_settings(p, ASRSettings)
    add_settings(p, LLMSettings)
    p.set_defaults(run=run_demo)


def run_tts(args: argparse.Namespace) -> int:
    from voxloop.audio import write_wav
    from voxloop.distill.teachers.tts import list_voices, synthesize

    if args.list_voices:
        for voice, ok, fix in list_voices(include_missing=args.all):
            state = "" if ok else f"  [missing: {fix}]"
            print(f"{voice.name:26s} {voice.role:9s} {voice.sample_rate_hz:6d} Hz  "
                  f"{voice.description}{state}")
        return 0
    if not args.text or not args.out:
        print("voxloop tts: error: --text and --out are required (or use --list-voices)",
              file=sys.stderr)
        return 2
    output_file(args.out, ".wav", "the speech", "--out")
    samples, rate_hz = synthesize(args.text, args.voice)
    write_wav(args.out, samples, rate_hz)
    print(f"wrote {args.out}: {len(samples) / rate_hz:.2f} s at {rate_hz} Hz, voice {args.voice}")
    return 0


def run_asr(args: argparse.Namespace) -> int:
    from voxloop.audio import read_wav
    from voxloop.distill.teachers.asr import load_asr

    samples, rate_hz = read_wav(args.wav)
    print(load_asr(settings_from_args(ASRSettings, args)).transcribe(samples, rate_hz))
    return 0


def run_llm(args: argparse.Namespace) -> int:
    from voxloop.distill.teachers.llm import load_llm

    llm = load_llm(settings_from_args(LLMSettings, args))
    if args.explain and hasattr(llm, "match"):
        match = llm.match(args.text)
        print(f"[intent {match.intent}, score {match.score:.2f}]", file=sys.stderr)
    print(llm.reply([], args.text))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from voxloop.audio import write_wav
    from voxloop.distill.teachers.asr import load_asr
    from voxloop.distill.teachers.cascade import Cascade
    from voxloop.distill.teachers.llm import load_llm
    from voxloop.distill.teachers.tts import synthesize

    output_file(args.out, ".wav", "the answer", "--out")
    t0 = time.perf_counter()
    cascade = Cascade(load_asr(settings_from_args(ASRSettings, args)),
                      load_llm(settings_from_args(LLMSettings, args)))
    load_ms = 1000 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    question, question_hz = synthesize(args.question, args.voice)
    speak_ms = 1000 * (time.perf_counter() - t0)
    result = cascade(question, question_hz)
    write_wav(args.out, result.samples, result.sample_rate_hz)
    answer_s = len(result.samples) / result.sample_rate_hz
    print(f"question   ({args.voice}, {speak_ms:.0f} ms to speak): {args.question}")
    print(f"transcript (ASR {result.stage_ms['asr']:.0f} ms): {result.transcript}")
    print(f"answer     (LLM {result.stage_ms['llm']:.0f} ms): {result.answer}")
    print(f"speech     (TTS {result.stage_ms['tts']:.0f} ms): {args.out}, {answer_s:.2f} s "
          f"of {ASSISTANT_VOICE}")
    total_ms = sum(result.stage_ms.values())
    print(f"cascade total {total_ms:.0f} ms after the question ended (models loaded in "
          f"{load_ms:.0f} ms)")
    return 0

