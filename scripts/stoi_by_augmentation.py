"""Where a decoder loses STOI on the held-out voices: per clip, grouped by augmentation.

``voxloop eval decoders`` gives one STOI over the held-out voices' clips, which the datasets
augment as they augment training voices. Every augmented clip has its speed changed (and
60 % their pitch); half add noise, 40 % a room (``draw_augmentation``). This reads the user
side of a dataset's ``heldout_voice`` turns (every ``--every``-th: its 16 kHz audio, its
cached codes and its augmentation), decodes the first ``--codebooks`` codebooks with each
decoder, and reports the mean STOI, and the share of clips at or above ``--target``, per
group: as the TTS said it, speed / pitch only, speed / pitch + noise, speed / pitch + a room
(with or without noise); per voice; and per voice of the clips as the TTS said them.

Usage: python scripts/stoi_by_augmentation.py [--data data/distill-v2]
       [--decoders general seanet] [--codebooks 8] [--every 3] [--target 0.88]
       [--out out/stoi-by-augmentation.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

AS_SAID = "as the TTS said it"


def kind_of(augmentation: dict | None) -> str:
    """One clip's group: what its augmentation did to the TTS audio."""
    if not augmentation:
        return AS_SAID
    if augmentation.get("reverb_rt60_s") is not None:
        return "speed / pitch + room" + (" + noise" if augmentation.get("snr_db") is not None
                                         else "")
    if augmentation.get("snr_db") is not None:
        return "speed / pitch + noise"
    return "speed / pitch only"


def clip_scores(data: str, decoders: list[str], codebooks: int, every: int) -> list[dict]:
    """``{voice, kind, <decoder>: STOI}`` per clip of ``data``'s held-out-voice turns."""
    from voxloop.codecs.registry import load_codec
    from voxloop.distill.data.dataset import iter_examples, load_manifest
    from voxloop.distill.evals.codec_decoders import stoi_score

    codec_name = load_manifest(data)["codec"]["name"]
    codecs = {name: load_codec(codec_name, decoder=name) for name in decoders}
    rate_hz = next(iter(codecs.values())).sample_rate
    rows = []
    for n, example in enumerate(iter_examples(data, "heldout_voice")):
        if n % every:
            continue
        if example.user_audio is None:
            raise SystemExit(f"error: {data}'s shards keep no user audio: build it with "
                             "voxloop distill synth (audio is kept by default)")
        original = example.user_audio.astype(np.float32) / 32768
        tokens = torch.from_numpy(example.user_codes[:codebooks].astype(np.int64))[None]
        row = {"id": example.id, "voice": example.user_voice,
               "kind": kind_of(example.meta.get("augmentation"))}
        for label, codec in codecs.items():
            decoded = codec.decode(tokens)[0, 0, :len(original)].numpy()
            row[label] = stoi_score(original, decoded, rate_hz)
        rows.append(row)
    return rows


def grouped(rows: list[dict], decoders: list[str], target: float) -> list[dict]:
    """Mean STOI and share at or above ``target`` per decoder, for every group of clips."""
    groups = {"all": rows}
    for key in ("kind", "voice"):
        for value in sorted({r[key] for r in rows}):
            groups[value] = [r for r in rows if r[key] == value]
    for voice in sorted({r["voice"] for r in rows}):
        groups[f"{voice}, {AS_SAID}"] = [r for r in rows if r["voice"] == voice and
                                         r["kind"] == AS_SAID]
    return [{"group": group, "clips": len(members),
             **{name: {"stoi": float(np.mean([r[name] for r in members])),
                       "at_target": float(np.mean([r[name] >= target for r in members]))}
                for name in decoders}} for group, members in groups.items() if members]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/distill-v2")
    parser.add_argument("--decoders", nargs="+", default=["general", "seanet"])
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--every", type=int, default=3, help="every N-th held-out-voice turn")
    parser.add_argument("--target", type=float, default=0.88)
    parser.add_argument("--out", default="out/stoi-by-augmentation.json")
    args = parser.parse_args()
    if args.every < 1 or args.codebooks < 1:
        raise SystemExit("error: --every and --codebooks must be at least 1")
    if not (Path(args.data) / "manifest.json").is_file():
        raise SystemExit(f"error: {args.data} has no manifest.json: build it with "
                         "voxloop distill synth")
    from voxloop.errors import VoxloopError

    torch.set_num_threads(1)
    try:
        rows = clip_scores(args.data, args.decoders, args.codebooks, args.every)
    except VoxloopError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if not rows:
        raise SystemExit(f"error: {args.data} has no built heldout_voice shards")
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
