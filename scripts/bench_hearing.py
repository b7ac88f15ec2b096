"""What hearing a user costs one native session: the acoustic codec's streaming encoder (a
codec-hearing student's ear) against the semantic tokenizer's stream (a semantic student's),
and with ``--residual-student`` the same stream hearing that student's residual levels too
(``distill.student.residual_levels``: more tokens per frame).

Both ears (``realtime.engines.ears``, exactly what a session runs) hear the same turns,
side by side, pushed in chunks as the server pushes them (``--chunk-ms``, 40 ms by
default), on one torch thread (the engine's default). Measured per ear:

- ``cpu_ms_per_audio_s``: the pushing thread's CPU time (``time.thread_time``) per second
  of user audio (the per-session cost while the user speaks);
- ``flush_ms``: the end-of-turn flush (wall clock), and for the semantic ear the
  speculative tail (the partial block flushed on a copy, at the first silent window);
- ``rtf``: wall time / audio time.

It also checks train == serve: the offline batched tokens a pack stores against the
stream's, on the same turns (share of equal tokens, level by level).

Usage: python scripts/bench_hearing.py [--turns 24] [--data data/distill-v1]
       [--student voxloop-student] [--semantic voxloop-semantic]
       [--residual-student FOLDER] [--out out/bench-hearing.json]
(without a trained --semantic folder an untrained tokenizer on the real Whisper tiny.en
encoder stands in: the cost does not depend on the codebook's values.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from voxloop.audio import MODEL_RATE_HZ, from_pcm16
from voxloop.errors import VoxloopError


def user_turns(data: str, turns: int) -> tuple[list[np.ndarray], str]:
    """Real user turns (16 kHz float32) from a dataset's shards, else noisy tones."""
    from voxloop.distill.data.dataset import read_shard

    clips = []
    for shard in sorted(Path(data, "shards").glob("*.npz")):
        examples, _ = read_shard(shard)
        clips += [from_pcm16(e.user_audio) for e in examples if e.user_audio is not None]
        if len(clips) >= turns:
            return clips[:turns], f"{turns} user turns of {data}"
    rng = np.random.default_rng(0)
    clips = []
    for _ in range(turns):
        n = int(rng.integers(2, 5) * MODEL_RATE_HZ)
        t = np.arange(n) / MODEL_RATE_HZ
        clips.append((0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 3 * t)
                      + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return clips, f"{turns} synthetic turns (no audio in {data})"


def semantic_tokenizer(name: str):
    from voxloop.codecs.semantic import SemanticConfig, new_tokenizer
    from voxloop.distill.student.user_tokens import load_tokenizer

    try:
        tokenizer, folder = load_tokenizer(name)
        return tokenizer, str(folder)
    except VoxloopError:
        tokenizer = new_tokenizer(SemanticConfig(), name="untrained")
        bottleneck = tokenizer.bottleneck
        if hasattr(bottleneck, "init_codebook"):  # any codes: the cost is the same
            bottleneck.init_codebook(torch.randn(4 * tokenizer.cardinality,
                                                 bottleneck.config.code_dim), iters=1)
        return tokenizer, f"untrained {SemanticConfig().frame_rate_hz:g} Hz tokenizer " \
                          f"(no {name} yet) on Whisper tiny.en"


def hear(ear, wav: np.ndarray, chunk: int) -> dict:
    """Push ``wav`` in chunks; the CPU and wall time of it, then of the tail and flush."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    frames = sum(ear.push(wav[i:i + chunk]).shape[1] for i in range(0, len(wav), chunk))
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    tail_ms = tail_cpu_ms = None
    tail = ear.tentative()
    if tail is not None:
        cpu0, t0 = time.thread_time(), time.perf_counter()
        tail()
        tail_ms = 1000 * (time.perf_counter() - t0)
        tail_cpu_ms = 1000 * (time.thread_time() - cpu0)
    cpu0, t0 = time.thread_time(), time.perf_counter()
    frames += ear.flush().shape[1]
    return {"cpu_s": cpu, "wall_s": wall, "tail_ms": tail_ms, "tail_cpu_ms": tail_cpu_ms,
            "flush_ms": 1000 * (time.perf_counter() - t0),
            "flush_cpu_ms": 1000 * (time.thread_time() - cpu0), "frames": frames}


def agree(offline: list[np.ndarray], streamed: list[np.ndarray]) -> dict:
    """How many of the streamed tokens ``[L, F]`` each equal the offline ones, per level."""
    equal = np.sum([(a == b).sum(axis=1) for a, b in zip(offline, streamed, strict=True)], 0)
    tokens = sum(s.shape[1] for s in streamed)
    return {"tokens": tokens, "equal": equal.tolist(),
            "share": (equal / max(1, tokens)).tolist()}


def summarize(rows: list[dict], audio_s: float) -> dict:
    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"mean": statistics.fmean(values), "median": statistics.median(values),
                "max": max(values)}

    return {"cpu_ms_per_audio_s": 1000 * sum(r["cpu_s"] for r in rows) / audio_s,
            "rtf": sum(r["wall_s"] for r in rows) / audio_s,
            "frames_per_audio_s": sum(r["frames"] for r in rows) / audio_s,
            "flush_ms": stats(r["flush_ms"] for r in rows),
            "flush_cpu_ms": stats(r["flush_cpu_ms"] for r in rows),
            "tail_ms": stats(r["tail_ms"] for r in rows),
            "tail_cpu_ms": stats(r["tail_cpu_ms"] for r in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=24)
    parser.add_argument("--data", default="data/distill-v1")
    parser.add_argument("--student", default="voxloop-student",
                        help="the codec-hearing student whose codec ear is measured")
    parser.add_argument("--semantic", default="voxloop-semantic")
    parser.add_argument("--residual-student", help="a student hearing residual levels of "
                        "--semantic: its ear is measured too")
    parser.add_argument("--chunk-ms", type=int, default=40)
    parser.add_argument("--out", default="out/bench-hearing.json")
    args = parser.parse_args()

    from voxloop.distill.student.codec import load_student_codec
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.user_tokens import as_frames, encode_clips
    from voxloop.realtime.engines.ears import CodecEar, SemanticEar

    torch.set_num_threads(1)
    student, vocab = load_student(args.student)
    codec = load_student_codec(None, vocab)
    tokenizer, semantic_name = semantic_tokenizer(args.semantic)
    clips, source = user_turns(args.data, args.turns)
    chunk = MODEL_RATE_HZ * args.chunk_ms // 1000
    warm = np.zeros(MODEL_RATE_HZ, np.float32)
    hear(CodecEar(codec, student.config.k_in), warm, chunk)  # first calls pay for setup
    hear(SemanticEar(tokenizer), warm, chunk)
    ears = {"semantic": tokenizer}
    if args.residual_student:
        from voxloop.distill.student.residual_levels import student_tokenizer

        ears["residual"] = student_tokenizer(tokenizer, load_student(args.residual_student)[0])
        hear(SemanticEar(ears["residual"]), warm, chunk)
    rows: dict[str, list[dict]] = {"codec": [], **{kind: [] for kind in ears}}
    streamed: dict[str, list[np.ndarray]] = {kind: [] for kind in ears}
    for wav in clips:  # side by side: each turn through every ear
        rows["codec"].append(hear(CodecEar(codec, student.config.k_in), wav, chunk))
        for kind, heard in ears.items():
            ear = SemanticEar(heard)
            pieces = [ear.push(wav[i:i + chunk]) for i in range(0, len(wav), chunk)]
            streamed[kind].append(np.concatenate([*pieces, ear.flush()], axis=1))  # [L, F]
            rows[kind].append(hear(SemanticEar(heard), wav, chunk))
    agreement = {kind: agree([as_frames(t) for t in encode_clips(heard, clips)], streamed[kind])
                 for kind, heard in ears.items()}
    audio_s = sum(len(c) for c in clips) / MODEL_RATE_HZ
    report = {
        "turns": source, "audio_s": audio_s, "chunk_ms": args.chunk_ms, "torch_threads": 1,
        "codec": {"name": codec.name, "k_in": student.config.k_in,
                  **summarize(rows["codec"], audio_s)},
        "semantic": {"name": semantic_name, "frame_rate_hz": tokenizer.frame_rate_hz,
                     "block_ms": tokenizer.config.block_ms,
                     **summarize(rows["semantic"], audio_s)},
        **({"residual": {"levels": ears["residual"].levels,
                         **summarize(rows["residual"], audio_s)}} if "residual" in ears else {}),
        "offline_equals_stream": agreement,
        "machine": {"cpus": os.cpu_count(), "loadavg_1min": os.getloadavg()[0]},
    }
    for kind in ("codec", *ears):
        r = report[kind]
        tail = f", speculative tail {r['tail_ms']['mean']:.1f} ms (CPU " \
            f"{r['tail_cpu_ms']['mean']:.1f})" if r["tail_ms"] else ""
        name = r.get("name", f"{r.get('levels')} levels")
        print(f"{kind:>8} ({name}): {r['cpu_ms_per_audio_s']:.1f} ms CPU per s of user "
              f"audio (RTF {r['rtf']:.3f}), end-of-turn flush {r['flush_ms']['mean']:.1f} ms "
              f"(CPU {r['flush_cpu_ms']['mean']:.1f}, max {r['flush_ms']['max']:.1f}){tail}")
    for kind, same in agreement.items():
        print(f"packed (offline, batched) tokens == streamed, {kind}, level by level: "
              + ", ".join(f"{e}/{same['tokens']}" for e in same["equal"]))
    print(f"{source}, {audio_s:.1f} s of audio, load average "
          f"{report['machine']['loadavg_1min']:.1f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
