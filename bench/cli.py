"""``voxloop bench latency``: voice-to-voice latency of the engines, side by side."""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from voxloop.bench.latency import LatencyBenchSettings
from voxloop.settings import add_command, add_settings, command_group, settings_from_args


def register(subparsers, groups: dict) -> None:
    group = command_group(subparsers, groups, "bench", "Benchmarks that print and save "
                          "their measurements.", "voxloop bench latency")
    p = add_command(group, "latency", "Voice-to-voice latency over the websocket, as a client "
                    "hears it: engines side by side, 1..N concurrent sessions, barge-in stop "
                    "time and playback underruns. Writes latency.json, latency.png and each "
                    "engine's server log (server-ENGINE.log: every response's stages).",
                    "voxloop bench latency --engines native cascade --sessions 1 2 4 8\n  "
                    "voxloop bench latency --engines native --turn-detections semantic_vad:medium "
                    "server_vad:500 --turns 6 --paused 10")
    add_settings(p, LatencyBenchSettings)
    p.set_defaults(run=run_latency)


def run_latency(args: argparse.Namespace) -> int:
    from voxloop.bench.latency import check_counts, records_json, run_latency_bench
    from voxloop.bench.report import table, write_report

    settings = settings_from_args(LatencyBenchSettings, args)
    check_counts(settings)  # before any server starts
    # SIGTERM unwinds like Ctrl-C, so the servers it started are stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if settings.turn_detections:
        from voxloop.bench.turns import run_turn_detection_bench
        from voxloop.bench.turns_report import table as turn_table

        styles = ", ".join(settings.paused_styles)
        print(f"turn detection on the {settings.engines[0]} engine: {settings.turns} complete "
              f"and {settings.paused} paused held-out questions ({styles}) per setting")
        print(turn_table(run_turn_detection_bench(settings)))
        print(f"wrote {settings.out}/turn-detection.json and turn-detection.png")
        return 0
    from voxloop.bench.latency import session_turn_detection

    td = session_turn_detection(settings)  # a bad setting fails before any server starts
    print(f"turn detection: {', '.join(f'{k} {v}' for k, v in td.items())}; appends of "
          f"{settings.chunk_ms} ms at real-time pace")
    records = records_json(run_latency_bench(settings))
    summary = write_report(records, asdict(settings), Path(settings.out))
    print(table(summary))
    print(f"wrote {settings.out}/latency.json, latency.png and the server logs")
    return 0
