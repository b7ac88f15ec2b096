"""The distillation dataset on disk: shards of dialogue examples and a manifest.

A dataset folder holds ``manifest.json`` and shards ``shards/{split}-{index:05d}.npz``.
One shard is one deterministic work unit of the synth job; it exists completely
or not at all (written to a temporary name, then ``os.replace``). Inside a shard
of N examples:

- ``user_codes`` int16 ``[K, sum F_user]`` and ``user_offsets`` int64 ``[N + 1]``
  (example i is ``user_codes[:, off[i]:off[i + 1]]``); the same for ``answer_codes``.
- optionally ``user_audio`` / ``answer_audio``: int16 ``[sum T]`` at
  ``MODEL_RATE_HZ`` with their offsets, kept so codes can be recomputed when the
  codec's weights change.
- ``records``: one JSON string, a list of N dicts with the text fields and meta.
- ``codec``: one JSON string, the codec name and sha256 the codes were made with.

``iter_examples(folder, split)`` reads them back as ``DialogueExample``;
``load_manifest(folder)`` gives the codec, frame rate, codebooks and split counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxloop.errors import VoxloopError
from voxloop.training import atomic_write, temp_host, temp_writer

SPLITS = ("train", "valid", "heldout_voice", "heldout_phrasing")
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class DialogueExample:
    """One user turn and the teacher's spoken answer, as codec tokens."""

    id: str  # stable: f"{intent}-t{template}-{voice}-{fill}"
    split: str  # one of SPLITS
    intent: str
    user_voice: str
    prompt_text: str  # what the user voice spoke
    asr_text: str  # text1 = ASR(speech1), or prompt_text where the plan skipped ASR
    answer_text: str  # text2 = LLM(text1)
    user_codes: np.ndarray  # int16 [K, F_user], 25 Hz frames
    answer_codes: np.ndarray  # int16 [K, F_answer], the assistant voice (piper:joe)
    meta: dict = field(default_factory=dict)  # augmentation, timing_ms, durations, codec
    user_audio: np.ndarray | None = None  # int16 [T_user] at MODEL_RATE_HZ, if kept
    answer_audio: np.ndarray | None = None  # int16 [T_answer] at MODEL_RATE_HZ, if kept


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.npz"


def shard_path(folder: str | Path, name: str) -> Path:
    return Path(folder) / SHARD_DIR / name


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete temporary files left by killed writers of this host (their pid is gone;
    another host's, on a shared folder, are not this one's to judge); returns them."""
    removed, here = [], temp_host()
    for tmp in Path(folder).rglob(".*.tmp"):
        host, pid = temp_writer(tmp.name)
        if pid is None or host != here:
            continue
        try:
            os.kill(pid, 0)
            continue  # the writer is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    path = Path(folder) / MANIFEST
    atomic_write_bytes(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def _concat(parts: list[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = [p.shape[axis] for p in parts]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.concatenate(parts, axis=axis), offsets


def _record(ex: DialogueExample) -> dict:
    return {"id": ex.id, "split": ex.split, "intent": ex.intent, "user_voice": ex.user_voice,
            "prompt_text": ex.prompt_text, "asr_text": ex.asr_text,
            "answer_text": ex.answer_text, "meta": ex.meta}


def write_shard(path: str | Path, examples: list[DialogueExample], codec: dict) -> Path:
    """Write ``examples`` as one shard, atomically. ``codec``: {"name", "sha256"}.

    Audio is stored only if every example carries it.
    """
    import io

    if not examples:
        raise VoxloopError(f"refusing to write an empty shard {path}")
    arrays: dict[str, np.ndarray] = {}
    for side in ("user", "answer"):
        codes = [np.asarray(getattr(ex, f"{side}_codes"), dtype=np.int16) for ex in examples]
        arrays[f"{side}_codes"], arrays[f"{side}_offsets"] = _concat(codes, axis=1)
        audio = [getattr(ex, f"{side}_audio") for ex in examples]
        if all(a is not None for a in audio):
            arrays[f"{side}_audio"], arrays[f"{side}_audio_offsets"] = _concat(
                [np.asarray(a, dtype=np.int16) for a in audio], axis=0)
    arrays["records"] = np.array(json.dumps([_record(ex) for ex in examples]))
    arrays["codec"] = np.array(json.dumps(codec))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_shard(path: str | Path) -> tuple[list[DialogueExample], dict]:
    """All examples of one shard (with audio where stored) and its codec dict."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    records = json.loads(str(arrays["records"]))
    codec = json.loads(str(arrays["codec"]))
    out = []
    for i, rec in enumerate(records):
        sides = {}
        for side in ("user", "answer"):
            off = arrays[f"{side}_offsets"]
            sides[f"{side}_codes"] = arrays[f"{side}_codes"][:, off[i]:off[i + 1]]
            if f"{side}_audio" in arrays:
                aoff = arrays[f"{side}_audio_offsets"]
                sides[f"{side}_audio"] = arrays[f"{side}_audio"][aoff[i]:aoff[i + 1]]
        out.append(DialogueExample(**rec, **sides))
    return out, codec


def load_manifest(folder: str | Path) -> dict:
    """The manifest, with ``splits[split]["examples_done"]`` / ``shards_done`` counted now.

    Keys: ``codec`` {name, sha256}, ``frame_rate_hz``, ``num_codebooks``,
    ``audio_rate_hz``, ``splits`` {split: {examples, shards: {name: count},
    examples_done, shards_done}}, ``settings`` and ``complete``.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise VoxloopError(f"{folder} is not a distillation dataset (no {MANIFEST}); "
                           "build one with `voxloop distill synth --out FOLDER`")
    manifest = json.loads(path.read_text())
    complete = True
    for info in manifest["splits"].values():
        done = {n: c for n, c in info["shards"].items() if shard_path(folder, n).is_file()}
        info["shards_done"], info["examples_done"] = len(done), sum(done.values())
        complete = complete and len(done) == len(info["shards"])
    manifest["complete"] = complete
    return manifest


def iter_examples(folder: str | Path, split: str | None = None,
                  shards: Collection[str] | None = None) -> Iterator[DialogueExample]:
    """The finished examples of ``split`` (all splits if None), in plan order; with
    ``shards``, of those shards only (what a reader found when it started, where the
    dataset is still being built).

    Raises if a shard's codes were made with another codec than the manifest's
    (a recode was interrupted: run `voxloop distill synth --recode` again).
    """
    manifest = load_manifest(folder)
    if split is not None and split not in manifest["splits"]:
        raise VoxloopError(f"unknown split {split!r}; this dataset has "
                           f"{sorted(manifest['splits'])}")
    sha = manifest["codec"]["sha256"]
    for name in sorted(manifest["splits"]):
        if split is not None and name != split:
            continue
        for shard in manifest["splits"][name]["shards"]:
            path = shard_path(folder, shard)
            if not path.is_file() or (shards is not None and shard not in shards):
                continue
            examples, codec = read_shard(path)
            if codec["sha256"] != sha:
                raise VoxloopError(
                    f"{path} holds codes of codec {codec['name']} ({codec['sha256'][:12]}) but "
                    f"the manifest says {sha[:12]}: finish `voxloop distill synth --recode`")
            yield from examples


def spoken_turns(folder: str | Path, split: str, limit: int = 0, progress: bool = False,
                 desc: str = "") -> Iterator[tuple[str, np.ndarray, str]]:
    """``(id, user audio float32 [T] at the dataset's rate, intended answer)`` of the
    first ``limit`` (0: all) built turns of ``split``, with a progress bar; a clear error
    where none is built yet or a turn kept no audio (evaluations replay these turns)."""
    from tqdm import tqdm

    total = load_manifest(folder)["splits"].get(split, {}).get("examples_done", 0)
    if not total:
        raise VoxloopError(f"{folder} has no {split} turns built yet: build them with "
                           "voxloop distill synth")
    total = min(total, limit or total)
    turns = tqdm(iter_examples(folder, split), desc=desc or split, unit="turn", total=total,
                 disable=not progress)
    for k, example in enumerate(turns):
        if k == total:
            break
        if example.user_audio is None or "prompt_answer" not in example.meta:
            raise VoxloopError(f"{folder} keeps no user audio or intended answer for "
                               f"{example.id}: build it with voxloop distill synth")
        yield (example.id, example.user_audio.astype(np.float32) / 32768.0,
               example.meta["prompt_answer"])
