"""The ``voxloop`` command: one entry point, one subcommand per job.

Subcommand modules register themselves through ``register(subparsers)`` and
import their heavy dependencies only when they run, so ``voxloop --help``
and the light client start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from voxloop import __version__
from voxloop.errors import VoxloopError

# Modules that define subcommands, in the order --help lists them.
COMMAND_MODULES = ("voxloop.codecs.cli", "voxloop.distill.teachers.cli", "voxloop.distill.data.cli",
                   "voxloop.distill.student.cli", "voxloop.distill.evals.cli",
                   "voxloop.realtime.cli", "voxloop.bench.cli", "voxloop.client.cli")

EPILOG = """examples:
  voxloop tts --list-voices
  voxloop tts --voice flite:slt --text "what is the capital of france" --out q.wav
  voxloop asr q.wav
  voxloop llm "what is the capital of france"
  voxloop demo --voice festival:slt-hts --question "how many legs does a spider have"

Run `voxloop COMMAND --help` for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxloop",
        description="voxloop: a self-hosted real-time voice assistant and the jobs that build it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"voxloop {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages (also after the command: voxloop serve -v)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict = {}  # nested command groups ("codec"), so several modules can add actions
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers, groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except VoxloopError as exc:
        print(f"voxloop {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader left (`voxloop client ... | head -2`): files are written before
        # anything is printed, so only the rest of the printing is lost. Point stdout at
        # /dev/null so the exit's flush does not fail again; 141 = 128 + SIGPIPE, as a shell
        # reports a program that a closed pipe ended.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
