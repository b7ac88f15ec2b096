"""``voxloop client``: talk to a voxloop (or any OpenAI Realtime) server."""

from __future__ import annotations

import argparse
import asyncio
import os

from voxloop.client.files import FileTurnSettings
from voxloop.settings import add_command, add_settings, settings_from_args

DEFAULT_URL = "ws://127.0.0.1:8765/v1/realtime"


def register(subparsers, groups: dict) -> None:
    p = add_command(subparsers, "client", "Speak a wav file to a realtime server and save the "
                    "spoken answer, with transcripts and latency.",
                    "voxloop client --input question.wav --output answer.wav")
    p.add_argument("--url", default=DEFAULT_URL, help="the server's realtime websocket")
    p.add_argument("--api-key", default=os.environ.get("VOXLOOP_API_KEY"),
                   help="API key, if the server wants one (default: $VOXLOOP_API_KEY)")
    p.add_argument("--input", required=True, help="the question, a wav file (any rate)")
    p.add_argument("--output", required=True, help="where to save the answer (wav, 24 kHz)")
    add_settings(p, FileTurnSettings)
    p.set_defaults(run=run_client)


def run_client(args: argparse.Namespace) -> int:
    from voxloop.client.files import save_answer, speak_file

    result = asyncio.run(speak_file(args.url, args.input, args.api_key,
                                    settings_from_args(FileTurnSettings, args)))
    for error in result.errors:
        print(f"server error  {error}")
    print(f"you said      {result.user_transcript}")
    print(f"assistant     {result.answer_transcript}")
    latency = "n/a" if result.latency_ms is None else f"{result.latency_ms:.0f} ms"
    print(f"latency       {latency} (end of your speech -> first answer audio)")
    save_answer(result, args.output)
    print(f"answer        {args.output}, {len(result.answer) / 24000:.2f} s ({result.status})")
    return 0 if result.status == "completed" else 1
