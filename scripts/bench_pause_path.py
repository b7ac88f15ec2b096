"""The native engine's path from a pause to the first answer audio, in-process, one session.

What the server does at a semantic_vad pause, without the websocket: held-out questions
(the dataset plan's held-out voices and phrasings, synthesized now) go through the real
turn detector and a native engine session in 20 ms pushes; at ``speech_paused`` the
engine starts its tentative answer and the end-of-turn model decides (as the session
does, the two at once), then the answer is relayed to its first audio. Reported per
variant (medians over questions x rounds, the variants taking turns): ms from the pause
to the decision, to the first audio, and their difference (the bench's "engine part"
without the network).

Variants: ``said`` (the student's known answers read from ``said_codes.safetensors``, the
engine's default) and ``mouth`` (the mouth runs for every answer).

Usage: python scripts/bench_pause_path.py [--questions 6] [--rounds 4]
       [--out out/bench-pause-path.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from voxloop.audio import MODEL_RATE_HZ, resample
from voxloop.realtime.engines.base import Turn
from voxloop.realtime.engines.native import NativeEngine, NativeSession, NativeSettings
from voxloop.realtime.semantic_turns import SemanticTurnDetector
from voxloop.realtime.wire.session_config import SemanticVad

PUSH_SAMPLES = MODEL_RATE_HZ // 50  # 20 ms, as the bench's appends


def pause_path(engine: NativeEngine, audio_16k: np.ndarray) -> tuple[float, float] | None:
    """(ms from the pause to the decision, to the first answer audio); None when the first
    pause did not end the turn."""
    detector = SemanticTurnDetector(SemanticVad(eagerness="medium"))
    session = NativeSession(engine)
    session.set_turn_detection(True, quick=True)  # semantic_vad's turns are heard with one ear
    try:
        hearing = False
        for i in range(0, len(audio_16k), PUSH_SAMPLES):
            chunk = audio_16k[i:i + PUSH_SAMPLES]
            events = detector.push(chunk)
            if hearing:
                session.hear(chunk)
            for event in events:
                if event.kind == "speech_started":
                    hearing = True
                    session.hear(audio_16k[event.audio_ms * MODEL_RATE_HZ // 1000:i + len(chunk)])
                elif event.kind == "speech_paused":
                    return _answer(session, detector)
        return None
    finally:
        session.close()


def _answer(session: NativeSession, detector: SemanticTurnDetector) -> tuple[float, float] | None:
    t0 = time.perf_counter()
    session.pause()  # the tentative answer starts; the decision runs meanwhile, here
    if not any(e.kind == "speech_stopped" for e in detector.decide()):
        return None
    decided_ms = 1000 * (time.perf_counter() - t0)
    cancel = threading.Event()
    turn = Turn(audio_24k=np.zeros(1, np.float32), heard_live=True)
    for out in session.respond(turn, cancel):
        if out.audio_24k is not None and len(out.audio_24k):
            cancel.set()
            return decided_ms, 1000 * (time.perf_counter() - t0)
    return None


def held_out_speech(count: int) -> list[tuple[str, str, np.ndarray]]:
    """``(text, voice, audio [T] at 16 kHz)`` of ``count`` held-out questions spread over
    the plan's held-out splits, each between 0.5 s and 1 s of silence."""
    from voxloop.distill.data.plan import SynthSettings, plan
    from voxloop.distill.teachers.tts import synthesize

    items = [i for i in plan(SynthSettings()) if i.split in ("heldout_voice", "heldout_phrasing")]
    out = []
    for item in (items[int(k)] for k in np.linspace(0, len(items) - 1, count)):
        samples, rate_hz = synthesize(item.prompt_text, item.user_voice)
        speech = resample(samples, rate_hz, MODEL_RATE_HZ).astype(np.float32)
        silence = np.zeros(MODEL_RATE_HZ, np.float32)
        out.append((item.prompt_text, item.user_voice,
                    np.concatenate([silence[:MODEL_RATE_HZ // 2], speech, silence])))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="out/bench-pause-path.json")
    args = parser.parse_args()
    questions = held_out_speech(args.questions)
    engines = {"said": NativeEngine(NativeSettings(votes=1)),
               "mouth": NativeEngine(NativeSettings(votes=1))}
    engines["mouth"].batcher.stepper.model.mouth.said_codes = None
    for engine in engines.values():
        engine.warm_up()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for _ in range(args.rounds):
        for _, _, audio in questions:
            for name, engine in engines.items():
                if (got := pause_path(engine, audio)) is not None:
                    runs[name].append(got)
    result = {"machine": platform.processor() or platform.machine(),
              "questions": [(text, voice) for text, voice, _ in questions],
              "rounds": args.rounds, "variants": {}}
    for name, got in runs.items():
        row = result["variants"][name] = {
            "n": len(got), "decided_ms": statistics.median(d for d, _ in got),
            "first_audio_ms": statistics.median(f for _, f in got),
            "engine_part_ms": statistics.median(f - d for d, f in got)}
        print(f"{name:>6}: n {row['n']}, from the pause: decided {row['decided_ms']:.1f} ms, "
              f"first audio {row['first_audio_ms']:.1f} ms, engine part "
              f"{row['engine_part_ms']:.1f} ms")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    for engine in engines.values():
        engine.batcher.shutdown()


if __name__ == "__main__":
    main()
