"""What streaming an answer's audio costs: the codec's decoders, decode only, one thread.

Every decoder streams the same codes in chunks of 1 frame (40 ms at 25 Hz: an answer's first
frame, the issue's one-frame RTF) and of 5 frames (200 ms: what the engine decodes per
call once an answer is under way), as ``voxloop eval decoders`` measures it
(``decode_speed``: the thread's CPU time per second of audio). A frame decoder runs
twice, its linear layers packed as float16 (``load_codec``'s default) and in float32,
so the two are measured side by side; the variants take turns round after round, and the
medians are reported with each variant's ratio to the float32 one. The codes are random:
a decoder does the same work whatever the codes are.

Usage: python scripts/bench_decode_speed.py [--codec voxloop-codec-16k]
       [--decoders assistant general seanet] [--rounds 9] [--seconds 5]
       [--out out/bench-decode-speed.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import numpy as np
import torch

from voxloop.codecs.decoder_config import SEANET
from voxloop.codecs.registry import load_codec
from voxloop.distill.evals.codec_decoders import chunks_ms, decode_speed

CHUNKS_FRAMES = (1, 5)


def variants(codec_name: str, decoders: list[str]) -> dict[str, object]:
    """``{label: codec}``: each frame decoder float16-packed and float32, SEANet once."""
    out = {}
    for name in decoders:
        if name == SEANET:
            out[SEANET] = load_codec(codec_name, decoder=SEANET)
            continue
        out[f"{name} float16"] = load_codec(codec_name, decoder=name)
        out[f"{name} float32"] = load_codec(codec_name, decoder=name, float16_linears=False)
    return out


def measure(codecs: dict[str, object], codes: np.ndarray, rounds: int) -> dict:
    runs = {label: {chunk: [] for chunk in CHUNKS_FRAMES} for label in codecs}
    for _ in range(rounds):
        for chunk in CHUNKS_FRAMES:
            for label, codec in codecs.items():
                runs[label][chunk].append(decode_speed(codec, codes, chunk)[1])
    return {label: {f"{chunk}_frames": {"cpu_rtf_median": statistics.median(values),
                                        "cpu_rtf_runs": values}
                    for chunk, values in by_chunk.items()}
            for label, by_chunk in runs.items()}


def with_ratios(results: dict) -> dict:
    """Each float16 row's speed-up over its float32 twin, per chunk size."""
    for label, row in results.items():
        twin = results.get(label.replace(" float16", " float32"))
        if label.endswith(" float16") and twin:
            for chunk, cell in row.items():
                cell["speedup_vs_float32"] = (twin[chunk]["cpu_rtf_median"]
                                              / cell["cpu_rtf_median"])
    return results


def table(results: dict, frame_rate_hz: float) -> str:
    head = " | ".join(f"RTF, {chunks_ms([c], frame_rate_hz)} chunks" for c in CHUNKS_FRAMES)
    lines = [f"| decoder | {head} |", "|---|" + "---|" * len(CHUNKS_FRAMES)]
    for label, row in results.items():
        cells = []
        for chunk in CHUNKS_FRAMES:
            cell = row[f"{chunk}_frames"]
            ratio = cell.get("speedup_vs_float32")
            cells.append(f"{cell['cpu_rtf_median']:.4f}"
                         + (f" ({ratio:.2f}x)" if ratio else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codec", default="voxloop-codec-16k")
    parser.add_argument("--decoders", nargs="+", default=["assistant", "general", SEANET])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per run")
    parser.add_argument("--out", type=Path, default=Path("out/bench-decode-speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    codecs = variants(args.codec, args.decoders)
    first = next(iter(codecs.values()))
    frames = max(1, round(args.seconds * first.frame_rate))
    codes = np.random.default_rng(0).integers(0, first.config.cardinality,
                                              (first.config.num_codebooks, frames))
    results = with_ratios(measure(codecs, codes, args.rounds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"codec": args.codec, "frames": frames,
                                    "frame_rate_hz": float(first.frame_rate),
                                    "rounds": args.rounds, "cpu": platform.processor(),
                                    "torch": torch.__version__, "results": results}, indent=2))
    print(table(results, first.frame_rate))
    print(f"(median of {args.rounds} rounds, {frames} frames each, one thread; {args.out})")


if __name__ == "__main__":
    main()
