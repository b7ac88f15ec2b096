"""Where a decoder loses STOI on the held-out voices: per clip, grouped by augmentation.

``voxloop eval decoders`` gives one STOI over the held-out voices' clips, which the datasets
augment as they augment training voices (speed, pitch, noise at an SNR, a room). This reads
the user side of a dataset's ``heldout_voice`` shards directly (every ``--every``-th turn:
its 16 kHz audio, its cached codes and its augmentation record), decodes the first
``--codebooks`` codebooks with each decoder, and reports the mean STOI, and the share of
clips at or above ``--target``, for each kind of clip: as the TTS said it (no augmentation),
speed / pitch only, noise only, a room (with or without noise), and by voice.

Usage: python scripts/stoi_by_augmentation.py [--data data/distill-v2]
       [--decoders general seanet] [--codebooks 8] [--every 3] [--target 0.88]
       [--out out/stoi-by-augmentation.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.data.dataset import load_manifest, shard_path


def kind_of(augmentation: dict) -> str:
    """One clip's group: what its augmentation did to the TTS audio."""
    if augmentation.get("reverb_rt60_s") is not None:
        return "room" + (" + noise" if augmentation.get("snr_db") is not None else "")
    if augmentation.get("snr_db") is not None:
        return "noise only"
    if augmentation.get("speed", 1.0) not in (None, 1.0) or \
            augmentation.get("pitch_semitones", 0.0) not in (None, 0.0):
        return "speed / pitch only"
    return "as the TTS said it"


def clip_scores(data: str, decoders: list[str], codebooks: int, every: int) -> list[dict]:
    """``{voice, kind, <decoder>: STOI}`` per clip of ``data``'s held-out-voice turns."""
    from pystoi import stoi

    from voxloop.codecs.registry import load_codec

    manifest = load_manifest(data)
    codecs = {name: load_codec(manifest["codec"]["name"], decoder=name) for name in decoders}
    rate_hz = next(iter(codecs.values())).sample_rate
    rows = []
    for name in manifest["splits"]["heldout_voice"]["shards"]:
        path = shard_path(data, name)
        if not path.is_file():
            continue
        with np.load(path) as shard:
            records = json.loads(str(shard["records"]))
            codes, offsets = shard["user_codes"], shard["user_offsets"]
            audio, audio_offsets = shard["user_audio"], shard["user_audio_offsets"]
        for i in range(0, len(records), every):
            original = audio[audio_offsets[i]:audio_offsets[i + 1]].astype(np.float32) / 32768
            tokens = torch.from_numpy(codes[:codebooks, offsets[i]:offsets[i + 1]]
                                      .astype(np.int64))[None]
            row = {"voice": records[i]["user_voice"],
                   "kind": kind_of(records[i]["meta"].get("augmentation") or {})}
            for label, codec in codecs.items():
                decoded = codec.decode(tokens)[0, 0, :len(original)].numpy()
                row[label] = float(stoi(original, decoded, rate_hz, extended=False))
            rows.append(row)
    return rows


def grouped(rows: list[dict], decoders: list[str], target: float) -> list[dict]:
    """Mean STOI and share at or above ``target`` per decoder, for every group of clips."""
    groups = {"all": rows}
    for key in ("kind", "voice"):
        for value in sorted({r[key] for r in rows}):
            groups[value] = [r for r in rows if r[key] == value]
    return [{"group": group, "clips": len(members),
             **{name: {"stoi": float(np.mean([r[name] for r in members])),
                       "at_target": float(np.mean([r[name] >= target for r in members]))}
                for name in decoders}} for group, members in groups.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/distill-v2")
    parser.add_argument("--decoders", nargs="+", default=["general", "seanet"])
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--every", type=int, default=3, help="every N-th held-out-voice turn")
    parser.add_argument("--target", type=float, default=0.88)
    parser.add_argument("--out", default="out/stoi-by-augmentation.json")
    args = parser.parse_args()
    if args.every < 1 or args.codebooks < 1:
        sys.exit("--every and --codebooks must be at least 1")
    if not (Path(args.data) / "manifest.json").is_file():
        sys.exit(f"{args.data} has no manifest.json: build it with voxloop distill synth")
    torch.set_num_threads(1)
    rows = clip_scores(args.data, args.decoders, args.codebooks, args.every)
    if not rows:
        sys.exit(f"{args.data} has no built heldout_voice shards")
    table = grouped(rows, args.decoders, args.target)
    print("| clips | n | " + " | ".join(f"{d} STOI (>= {args.target})" for d in args.decoders)
          + " |\n|---|---|" + "---|" * len(args.decoders))
    for row in table:
        print(f"| {row['group']} | {row['clips']} | " + " | ".join(
            f"{row[d]['stoi']:.3f} ({100 * row[d]['at_target']:.0f} %)" for d in args.decoders)
            + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": vars(args), "groups": table, "clips": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
