"""``voxloop client``: talk to a voxloop (or any OpenAI Realtime) server.

Live mode (the default) uses the microphone and the speaker; file mode
(``--input``) speaks a wav file and saves the answer. Only light modules are
imported here, so the command starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time

from voxloop.client.audio_io import AudioSettings
from voxloop.client.connect import realtime_url
from voxloop.client.echo import EchoSettings
from voxloop.client.files import FileTurnSettings
from voxloop.client.jitter import JitterSettings
from voxloop.client.live import LiveSettings
from voxloop.errors import VoxloopError
from voxloop.settings import add_command, add_settings, settings_from_args

DEFAULT_URL = "ws://127.0.0.1:8765/v1/realtime"
LIVE_SETTINGS = (AudioSettings, EchoSettings, JitterSettings, LiveSettings)


def register(subparsers, groups: dict) -> None:
    p = add_command(subparsers, "client", "Talk to a realtime server: live from the microphone "
                    "(default), or speak a wav file and save the spoken answer (--input).",
                    "voxloop client                    # live: talk, Ctrl-C to quit\n"
                    "  voxloop client --list-devices\n"
                    "  voxloop client --input question.wav --output answer.wav")
    p.add_argument("--url", default=DEFAULT_URL, help="the server's realtime websocket: "
                   "ws://HOST:PORT, ws://HOST:PORT/v1 or the full path")
    p.add_argument("--api-key", default=os.environ.get("VOXLOOP_API_KEY"),
                   help="API key, if the server wants one (default: $VOXLOOP_API_KEY)")
    p.add_argument("--list-devices", action="store_true",
                   help="list the sound devices and their ids, then exit")
    p.add_argument("--input", help="file mode: the question, a wav file (any rate)")
    p.add_argument("--output", help="file mode: where to save the answer (wav, 24 kHz)")
    add_settings(p, FileTurnSettings)
    for cls in LIVE_SETTINGS:
        add_settings(p, cls)
    p.set_defaults(run=run_client)


def run_client(args: argparse.Namespace) -> int:
    if args.list_devices:
        from voxloop.client.devices import list_devices

        print(list_devices())
        return 0
    url = realtime_url(args.url)
    if args.input:
        if not args.output:
            raise VoxloopError("--input needs --output (where to save the answer)")
        return run_file(args, url)
    if args.output:
        raise VoxloopError("--output needs --input: file mode speaks a wav file and saves the "
                           "answer; live mode (no --input) plays the answer and saves nothing "
                           "(--stats-json and --dump-audio save what it measured and heard)")
    return run_live(args, url)


def run_file(args: argparse.Namespace, url: str) -> int:
    from voxloop.client.files import check_output_path, save_answer, speak_file

    check_output_path(args.output)  # before the turn, so a bad path never costs an answer
    result = asyncio.run(speak_file(url, args.input, args.api_key,
                                    settings_from_args(FileTurnSettings, args)))
    save_answer(result, args.output)  # before printing: `| head -2` must not lose it
    for error in result.errors:
        print(f"server error  {error}")
    print(f"you said      {result.user_transcript}")
    print(f"assistant     {result.answer_transcript}")
    latency = "n/a" if result.latency_ms is None else f"{result.latency_ms:.0f} ms"
    print(f"latency       {latency} (end of your speech -> first answer audio)")
    print(f"answer        {args.output}, {len(result.answer) / 24000:.2f} s ({result.status})")
    return 0 if result.status == "completed" else 1


def run_live(args: argparse.Namespace, url: str) -> int:
    from voxloop.client.audio_io import quiet_alsa
    from voxloop.client.live import LiveClient
    from voxloop.client.view import RichView, make_view

    started_s = time.perf_counter()
    # Ctrl-C ends the client even when it was started in the background of a script,
    # where the shell hands it SIGINT ignored (and Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    audio, echo, jitter, live = (settings_from_args(cls, args) for cls in LIVE_SETTINGS)
    client = LiveClient(url, args.api_key, audio, echo, jitter, live)
    view = make_view(live.view)
    if isinstance(view, RichView):
        quiet_alsa()
    try:
        with view:
            asyncio.run(client.run(view))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        pass
    summary = client.summary()
    if client.ready_s is not None:
        summary["startup_ms"] = round(1000 * (client.ready_s - started_s))
    if live.stats_json:
        with open(live.stats_json, "w") as f:
            json.dump(summary, f, indent=1)
    print(_summary_text(summary))
    return 0


def _summary_text(summary: dict) -> str:
    latencies = [t["latency_ms"] for t in summary["turns"] if t["latency_ms"] is not None]
    mean = f"{sum(latencies) / len(latencies):.0f} ms" if latencies else "n/a"
    lines = [f"turns {len(summary['turns'])}, mean latency {mean}, "
             f"underruns {summary['underruns']}, barge-ins {summary['barge_ins']}, "
             f"reconnects {summary['reconnects']}, echo {summary['echo']}"]
    if summary.get("echo_reduction_db") is not None:
        lines.append(f"echo: mic {summary['mic_during_playback_dbfs']} dBFS while the "
                     f"assistant spoke, sent {summary['sent_during_playback_dbfs']} dBFS "
                     f"({summary['echo_reduction_db']} dB less)")
    return "\n".join(lines)
