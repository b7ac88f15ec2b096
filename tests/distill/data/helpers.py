"""The tiny synth plan and how to compare its shards: shared by the synth tests and the
reliability suite's killed-job tests."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from voxloop.distill.data.dataset import read_shard, shard_path
from voxloop.distill.data.plan import SynthSettings

TINY = SynthSettings(
    intents=("greeting", "capital"), user_voices=("flite:slt", "flite:kal16", "flite:awb"),
    fills_per_template=1, voices_per_prompt=1, heldout_phrasing_voices=1,
    heldout_voice_prompts=1, valid_fraction=0.2, examples_per_shard=2, threads=1,
    min_turns_per_intent=0)
VOLATILE_META = ("timing_ms", "answer_cached")  # differ between runs by nature


def cli_args(settings: SynthSettings) -> list[str]:
    """The command line that gives ``settings``."""
    args = []
    for f in fields(settings):
        value, flag = getattr(settings, f.name), "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            args += [flag, *value] if value else []
        elif value != "":
            args += [flag, str(value)]
    return args


def comparable(folder: Path, name: str) -> tuple[list[dict], dict]:
    examples, codec = read_shard(shard_path(folder, name))
    rows = []
    for ex in examples:
        row = {k: v for k, v in asdict(ex).items() if not isinstance(v, np.ndarray)}
        row["meta"] = {k: v for k, v in ex.meta.items() if k not in VOLATILE_META}
        for key in ("user_codes", "answer_codes", "user_audio", "answer_audio"):
            row[key] = getattr(ex, key).tobytes()
        rows.append(row)
    return rows, codec
