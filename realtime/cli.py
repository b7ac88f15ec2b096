"""``voxloop serve``: the OpenAI Realtime-compatible websocket server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from dataclasses import replace

from voxloop.distill.teachers.asr import ASRSettings
from voxloop.distill.teachers.llm import LLMSettings
from voxloop.realtime.engines.cascade import CascadeSettings
from voxloop.realtime.engines.native import NativeSettings
from voxloop.realtime.server import ServerSettings
from voxloop.settings import add_command, add_settings, settings_from_args

ENGINES = ("native", "cascade")
# native slots beyond one per session: turns answered or transcribed outside the
# session's own slot (manual commits, items sent whole, input transcription)
SPARE_NATIVE_SLOTS = 4


def register(subparsers, groups: dict) -> None:
    p = add_command(subparsers, "serve", "Serve the OpenAI Realtime API over a websocket "
                    "(/v1/realtime), with /healthz and /metrics.",
                    "voxloop serve --port 8765 --engine native")
    p.add_argument("--engine", choices=ENGINES, default=ENGINES[0],
                   help="what answers: native = the distilled audio-native student, "
                        "cascade = the ASR -> LLM -> TTS teachers")
    add_settings(p, ServerSettings)
    add_settings(p, NativeSettings)
    add_settings(p, CascadeSettings)
    add_settings(p, ASRSettings)
    add_settings(p, LLMSettings)
    p.set_defaults(run=run_serve)


def load_engine(name: str, args: argparse.Namespace):
    """Build the engine called ``name`` from the command line's settings."""
    if name == "native":
        from voxloop.realtime.engines.native import NativeEngine

        native = settings_from_args(NativeSettings, args)
        max_sessions = settings_from_args(ServerSettings, args).max_sessions
        slots = max(native.slots, max_sessions + SPARE_NATIVE_SLOTS)
        return NativeEngine(replace(native, slots=slots))
    from voxloop.realtime.engines.cascade import CascadeEngine

    return CascadeEngine(settings_from_args(CascadeSettings, args),
                         settings_from_args(ASRSettings, args),
                         settings_from_args(LLMSettings, args))


def run_serve(args: argparse.Namespace) -> int:
    from voxloop.realtime.server import RealtimeServer

    logging.getLogger("voxloop").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    settings = settings_from_args(ServerSettings, args)
    if settings.api_key is None and os.environ.get("VOXLOOP_API_KEY"):
        settings = replace(settings, api_key=os.environ["VOXLOOP_API_KEY"])
    t0 = time.perf_counter()
    engine = load_engine(args.engine, args)
    engine.warm_up()
    logging.getLogger("voxloop.realtime").info(
        "event=engine_ready engine=%s load_ms=%d", engine.name, 1000 * (time.perf_counter() - t0))
    asyncio.run(RealtimeServer(engine, settings).serve_until_signal())
    return 0
