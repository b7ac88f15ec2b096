"""``voxloop distill semantic``: the semantic tokenizer trained from a dataset folder.

A hand-made dataset of noise-and-tone clips (no TTS) and a small random encoder keep the
job's tests fast: which turns train (train split only, never held out; the built shards of
a partial dataset), the valid fallback, the per-shard feature cache, resuming, the card
and the export. One test runs the real command with the pinned tiny.en encoder."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from voxloop.audio import MODEL_RATE_HZ
from voxloop.codecs.semantic import SemanticConfig, load_semantic
from voxloop.codecs.semantic_train import SemanticTrainSettings
from voxloop.codecs.whisper_encoder import WhisperEncoder
from voxloop.distill.data.dataset import (
    DialogueExample,
    shard_name,
    shard_path,
    write_manifest,
    write_shard,
)
from voxloop.distill.data.semantic_job import SemanticJobSettings, run_semantic_job

SMALL = SemanticConfig(block_ms=200, hidden_dim=32, code_dim=8, codebook_size=16, head_dim=16,
                       lookup_dim=4)
CODEC = {"name": "fake-codec", "sha256": "0" * 64}
WORDS = ("what time is it", "set a timer", "how far is the moon", "tell me a joke")


def clip(seed: int) -> np.ndarray:
    """~0.6-1.2 s of tones and noise, int16 at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(MODEL_RATE_HZ * rng.uniform(0.6, 1.2))) / MODEL_RATE_HZ
    wav = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(len(t))
    return (wav * 32767 * 0.5).astype(np.int16)


def make_dataset(folder, built: dict[str, list[int]], planned: dict[str, int],
                 per_shard: int = 3):
    """Shards ``built[split]`` of ``planned[split]`` exist; prompt words name their split."""
    splits = {}
    for split, count in planned.items():
        names = {shard_name(split, i): per_shard for i in range(count)}
        splits[split] = {"examples": per_shard * count, "shards": names}
        for index in built.get(split, []):
            examples = [DialogueExample(
                id=f"{split}-{index}-{j}", split=split, intent="x", user_voice="v",
                prompt_text=f"{split} {WORDS[(index + j) % len(WORDS)]}", asr_text="",
                answer_text="", user_codes=np.zeros((1, 2), np.int16),
                answer_codes=np.zeros((1, 2), np.int16),
                user_audio=clip(1000 * len(split) + 10 * index + j),
                answer_audio=np.zeros(10, np.int16)) for j in range(per_shard)]
            write_shard(shard_path(folder, shard_name(split, index)), examples, CODEC)
    write_manifest(folder, {"codec": CODEC, "splits": splits, "frame_rate_hz": 25.0})
    return folder


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    torch.manual_seed(0)
    return WhisperEncoder(num_layers=1, num_heads=2, width=32, max_frames=50).eval() \
        .requires_grad_(False)


def settings(tmp_path, steps: int) -> SemanticTrainSettings:
    return SemanticTrainSettings(out=str(tmp_path / "run"), steps=steps, batch_size=4,
                                 lr=1e-2, warmup_steps=2, ckpt_every=5, eval_every=5,
                                 vq_start_step=3, threads=1)


def test_partial_dataset_trains_on_built_train_shards_only(tmp_path, encoder, monkeypatch):
    planned = {"train": 4, "valid": 1, "heldout_voice": 1, "heldout_phrasing": 1}
    data = make_dataset(tmp_path / "data", {"train": [0, 1, 3], "heldout_voice": [0]}, planned)
    import voxloop.codecs.semantic_train as semantic_train

    seen, real_fit = {}, semantic_train.fit

    def spy(tokenizer, train, valid, *args, **kwargs):
        seen["train"], seen["valid"] = train[1], valid[1]
        return real_fit(tokenizer, train, valid, *args, **kwargs)

    monkeypatch.setattr(semantic_train, "fit", spy)
    job = SemanticJobSettings(data=str(data), valid_every=4, export=str(tmp_path / "export"))
    summary = run_semantic_job(job, SMALL, settings(tmp_path, 10), command="voxloop test",
                               progress=False, encoder=encoder)

    assert summary["shards_built"] == {"train": "3/4", "valid": "0/1", "heldout_voice": "1/1",
                                       "heldout_phrasing": "0/1"}
    # no valid turn built: every 4th of the 9 training turns validates instead
    assert summary["turns"] == {"train": 7, "valid": 2, "heldout_voice": 3,
                                "heldout_phrasing": 0}
    assert all(t.startswith("train ") for t in seen["train"] + seen["valid"])
    assert (len(seen["train"]), len(seen["valid"])) == (7, 2)
    assert set(summary["results"]) == {"valid", "heldout_voice"}  # measured, never trained
    assert sorted(p.name for p in (tmp_path / "run" / "features" / "data").iterdir()) == [
        "heldout_voice-00000.pt", "train-00000.pt", "train-00001.pt", "train-00003.pt"]

    card = (tmp_path / "export" / "README.md").read_text()
    assert "voxloop test" in card and "heldout_voice" in card and "7 training turns" in card
    exported = load_semantic(tmp_path / "export", encoder)
    assert exported.codebook_vectors().shape == (16, 8)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps"] == 10


def test_a_grown_dataset_encodes_only_new_shards_and_training_resumes(tmp_path, encoder):
    planned = {"train": 3, "valid": 1, "heldout_voice": 0, "heldout_phrasing": 0}
    data = make_dataset(tmp_path / "data", {"train": [0, 1], "valid": [0]}, planned)
    job = SemanticJobSettings(data=str(data))
    first = run_semantic_job(job, SMALL, settings(tmp_path, 5), progress=False, encoder=encoder)
    assert first["turns"]["train"] == 6 and first["turns"]["valid"] == 3
    cache = tmp_path / "run" / "features" / "data"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}

    make_dataset(tmp_path / "data", {"train": [2]}, planned)  # the synth job wrote one more
    second = run_semantic_job(job, SMALL, dataclasses.replace(settings(tmp_path, 5), steps=8),
                              progress=False, encoder=encoder)
    assert second["turns"]["train"] == 9 and second["steps"] == 8
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir() if p.name in stamps} == stamps
    assert (cache / "train-00002.pt").is_file()
    history = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["history"]
    assert [h["step"] for h in history] == [5, 8]  # resumed at step 5

    capped = run_semantic_job(dataclasses.replace(job, max_train=4), SMALL,
                              settings(tmp_path / "capped", 2), progress=False, encoder=encoder)
    assert capped["turns"]["train"] == 4


def test_extra_datasets_add_their_train_split_only(tmp_path, encoder, monkeypatch):
    planned = {"train": 1, "valid": 1, "heldout_voice": 1, "heldout_phrasing": 1}
    data = make_dataset(tmp_path / "v2", {"train": [0], "valid": [0]}, planned)
    extra = make_dataset(tmp_path / "v1", {"train": [0, 1], "valid": [0], "heldout_voice": [0],
                                           "heldout_phrasing": [0]}, {**planned, "train": 2})
    import voxloop.codecs.semantic_train as semantic_train

    seen, real_fit = {}, semantic_train.fit

    def spy(tokenizer, train, valid, *args, **kwargs):
        seen["train"], seen["valid"] = train[1], valid[1]
        return real_fit(tokenizer, train, valid, *args, **kwargs)

    monkeypatch.setattr(semantic_train, "fit", spy)
    job = SemanticJobSettings(data=str(data), extra_train=(str(extra),))
    summary = run_semantic_job(job, SMALL, settings(tmp_path, 4), progress=False,
                               encoder=encoder)
    assert summary["turns"]["train"] == 9
    assert summary["extra_train"] == {str(extra): 6}
    assert summary["command"].startswith(f"voxloop distill semantic --data {data} "
                                         f"--extra-train {extra} --out ")
    assert len(seen["valid"]) == 3  # the main dataset's valid split only
    assert all(t.startswith("train ") for t in seen["train"])
    assert all(t.startswith("valid ") for t in seen["valid"])
    assert {p.name for p in (tmp_path / "run" / "features").iterdir()} == {"v1", "v2"}
    assert f"of which 6 from the train split of `{extra}`" in (
        tmp_path / "run" / "model" / "README.md").read_text()


def test_shards_without_user_audio_are_a_clear_error(tmp_path, encoder):
    from voxloop.errors import VoxloopError

    data = make_dataset(tmp_path / "data", {}, {"train": 1, "valid": 1})
    example = DialogueExample(
        id="a", split="train", intent="x", user_voice="v", prompt_text="hi", asr_text="",
        answer_text="", user_codes=np.zeros((1, 2), np.int16),
        answer_codes=np.zeros((1, 2), np.int16))
    write_shard(shard_path(data, shard_name("train", 0)), [example], CODEC)
    with pytest.raises(VoxloopError, match="no user audio"):
        run_semantic_job(SemanticJobSettings(data=str(data)), SMALL, settings(tmp_path, 2),
                         progress=False, encoder=encoder)


def test_command_line_with_the_pinned_encoder(tmp_path, capsys):
    from voxloop.cli import main

    planned = {"train": 2, "valid": 1, "heldout_voice": 1, "heldout_phrasing": 1}
    data = make_dataset(tmp_path / "data", {"train": [0, 1], "valid": [0],
                                            "heldout_phrasing": [0]}, planned, per_shard=2)
    assert main(["distill", "semantic", "--data", str(data), "--out", str(tmp_path / "run"),
                 "--export", str(tmp_path / "model"), "--steps", "4", "--batch-size", "2",
                 "--vq-start-step", "2", "--codebook-size", "8", "--hidden-dim", "32",
                 "--code-dim", "8", "--head-dim", "16", "--threads", "1"]) == 0
    out = capsys.readouterr()
    assert "training on 4 turns, validating on 2" in out.err
    assert "heldout_phrasing: CER" in out.out and "valid: CER" in out.out
    assert (tmp_path / "model" / "model.safetensors").is_file()
    command = (f"voxloop distill semantic --data {data} --export {tmp_path / 'model'} "
               f"--out {tmp_path / 'run'} --steps 4 --batch-size 2 --threads 1 --vq-start-step 2 "
               "--hidden-dim 32 --code-dim 8 --codebook-size 8 --head-dim 16")
    assert f"Command: `{command}`" in (tmp_path / "model" / "README.md").read_text()
