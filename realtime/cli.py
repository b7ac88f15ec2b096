"""``voxloop serve``: the OpenAI Realtime-compatible websocket server."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import time
from dataclasses import replace

from voxloop.distill.teachers.asr import ASRSettings
from voxloop.distill.teachers.llm import LLMSettings
from voxloop.errors import VoxloopError
from voxloop.realtime.engines.cascade import CascadeSettings
from voxloop.realtime.engines.hybrid import HybridSettings
from voxloop.realtime.engines.native_settings import NativeSettings
from voxloop.realtime.server import ServerSettings
from voxloop.settings import add_command, add_settings, settings_from_args

# On spoken questions of its domain the bundled student beats the cascade (its card has the
# numbers: held-out turns right out loud, the cascade's words on the same turns). It answers
# no typed text, knows only its domain and follows no instructions, so the default is the
# hybrid: the student for speech, the cascade for typed text, for instructions an LLM
# follows and for what the student refuses or is unsure of.
ENGINES = ("hybrid", "cascade", "native")
DEFAULT_ENGINE = "hybrid"
# native sessions beyond --max-sessions (each holds a slot per ear): turns answered or
# transcribed outside the session's own slots (manual commits, items sent whole, input
# transcription)
SPARE_NATIVE_SLOTS = 4


def register(subparsers, groups: dict) -> None:
    p = add_command(subparsers, "serve", "Serve the OpenAI Realtime API over a websocket "
                    "(/v1/realtime), with /healthz, /metrics and a browser client at /.",
                    "voxloop serve --port 8765 --engine cascade")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                   help="what answers: hybrid (the default) = the student for speech, the "
                        "cascade for typed text, for instructions its LLM follows and for "
                        "questions the student refuses or is unsure of; native = the "
                        "distilled audio-native student alone (~0.25 s; the bundled one gives "
                        "the intended answer to 80 %% of held-out spoken questions; speech "
                        "only); cascade = the ASR -> LLM -> TTS teachers alone (~1 s)")
    add_settings(p, ServerSettings)
    add_settings(p, NativeSettings)
    add_settings(p, HybridSettings)
    add_settings(p, CascadeSettings)
    add_settings(p, ASRSettings)
    add_settings(p, LLMSettings)
    p.set_defaults(run=run_serve)


def load_engine(name: str, args: argparse.Namespace):
    """Build the engine called ``name`` from the command line's settings."""
    if name == "hybrid":
        from voxloop.distill.student.model import student_folder
        from voxloop.realtime.engines.hybrid import HybridEngine

        native = settings_from_args(NativeSettings, args)
        unsure, refusal = settings_from_args(HybridSettings, args).thresholds(
            student_folder(native.student))
        return HybridEngine(load_engine("native", args), load_engine("cascade", args),
                            min_words_logprob=unsure, refusal_heard_logprob=refusal)
    if name == "native":
        from voxloop.realtime.engines.native import NativeEngine

        native = settings_from_args(NativeSettings, args)
        max_sessions = settings_from_args(ServerSettings, args).max_sessions
        sessions = max_sessions + SPARE_NATIVE_SLOTS  # each with one slot per ear
        voting = min(native.voting_sessions or sessions, sessions)
        slots = max(native.slots, sessions + (native.votes - 1) * voting)
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
    settings.check()
    check_address(settings.host, settings.port)  # before the models: seconds, not minutes
    t0 = time.perf_counter()
    engine = load_engine(args.engine, args)
    engine.warm_up()
    logging.getLogger("voxloop.realtime").info(
        "event=engine_ready engine=%s %s load_ms=%d", engine.name,
        " ".join(f"{role}={name}" for role, name in engine.models.items()),
        1000 * (time.perf_counter() - t0))
    try:
        asyncio.run(RealtimeServer(engine, settings).serve_until_signal())
    except OSError as exc:  # the port was taken while the models loaded
        raise VoxloopError(_address_error(settings.host, settings.port, exc)) from exc
    return 0


def check_address(host: str, port: int) -> None:
    """Raise a one-line error unless ``host:port`` can be listened on right now."""
    if not 0 <= port <= 65535:
        raise VoxloopError(f"--port {port}: a port is 0 to 65535 (0: any free port)")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise VoxloopError(f"--host {host!r} is not an address of this machine "
                           f"({getattr(exc, 'strerror', None) or exc}): use 127.0.0.1 (this "
                           "machine only), 0.0.0.0 (every interface) or one of its IPs") from exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
            try:
                probe.bind(address)
            except OSError as exc:
                raise VoxloopError(_address_error(host, port, exc)) from exc


def _address_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use (another `voxloop serve`?): stop that "
                "server or pick another --port (0: any free port)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"--host {host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 "
                "or one of its IPs")
    if exc.errno == errno.EACCES:
        return f"port {port} needs root on this system: pick one above 1023"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
