"""``voxloop distill end-of-turn``'s data build: every split's shards of
:mod:`turn_data`'s examples, resumable and shared between processes (``--shard I/N``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from voxloop.distill.data.turn_data import EVAL_SPLITS, TurnDataSettings, build_shard, pick_items
from voxloop.training import atomic_write

SHAPING = ("data_seed", "more_phrasings", "augment_share", "items_per_shard")  # what the
# shards hold, not how many there are (more --train-items go on with the same first ones)


def _check_same_build(out: Path, stored: dict, info: dict) -> None:
    """A folder is resumed (or grown) only with the tokenizer and the settings that made its
    shards: else the old and the new would mix, cut and drawn differently."""
    from voxloop.errors import VoxloopError

    if stored["semantic_sha256"] != info["semantic_sha256"]:
        raise VoxloopError(f"{out} holds tokens of another semantic tokenizer: use a new "
                           "--data-out")
    was = stored.get("settings", {})
    differ = [f"--{k.replace('_', '-')} {was[k]}" for k in SHAPING
              if k in was and was[k] != info["settings"][k]]
    if differ:
        raise VoxloopError(f"{out} was built with {', '.join(differ)}: its shards would mix "
                           "with ones made otherwise; give the same settings or a new "
                           "--data-out")


def build_turn_data(settings: TurnDataSettings, progress=print) -> Path:
    """Every split's shards of this process's share (those already written are kept);
    returns the folder."""
    from voxloop.codecs.semantic_tokens import find_semantic, load_semantic_model
    from voxloop.distill.data.plan import my_shards, parse_share
    from voxloop.models import weights_sha256

    out = Path(settings.data_out)
    out.mkdir(parents=True, exist_ok=True)
    folder = find_semantic(settings.semantic)
    info = {"settings": {k: v for k, v in asdict(settings).items() if k != "shard"},
            "semantic_sha256": weights_sha256(folder)}
    manifest = out / "manifest.json"
    if manifest.is_file():
        _check_same_build(out, json.loads(manifest.read_text()), info)
    plan = {}  # shard file -> its items: every split's shards in order
    for split in ("train", *EVAL_SPLITS):
        count = settings.train_items if split == "train" else settings.eval_items
        items = pick_items(split, count, settings.data_seed, settings.more_phrasings)
        for index, start in enumerate(range(0, len(items), settings.items_per_shard)):
            plan[f"{split}-{index:04d}.npz"] = items[start:start + settings.items_per_shard]
    info["shards"] = list(plan)  # what load_split reads: fewer items leave shards unread
    atomic_write(manifest, lambda tmp: tmp.write_text(json.dumps(info, indent=1) + "\n"))
    tokenizer = None
    for name in my_shards(list(plan), parse_share(settings.shard)):
        path = out / name
        if path.is_file() and planned_items(path) in (None, len(plan[name])):
            continue  # (a last shard of fewer items than are planned now is made again)
        tokenizer = tokenizer or load_semantic_model(folder)
        t0 = time.perf_counter()
        shard = build_shard(plan[name], tokenizer, settings.data_seed,
                            augment_share=settings.augment_share if name.startswith("train")
                            else 0.0)
        write_shard(path, shard, len(plan[name]))
        progress(f"{name}: {len(shard['labels'])} examples ({time.perf_counter() - t0:.0f} s)")
    return out


def write_shard(path: Path, shard: dict, planned: int | None = None) -> None:
    """The shard of ``planned`` items (each gives two or three examples), all or nothing."""
    meta = {k: shard.get(k) for k in ("texts", "voices", "augmentations")}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file, so savez adds no ".npz" to the temporary name
            np.savez(f, **{k: v for k, v in shard.items() if isinstance(v, np.ndarray)},
                     meta=json.dumps({**meta, "planned": planned}))

    atomic_write(path, write)


def planned_items(path: Path) -> int | None:
    """How many items a shard was planned with (None: a shard written before it said)."""
    with np.load(path) as shard:
        return json.loads(str(shard["meta"])).get("planned")
