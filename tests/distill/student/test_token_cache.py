"""Semantic tokens cached per dataset shard: the tokens the stream gives, computed once,
the missing ones only, and the same from worker processes as from one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.distill.student.semantic_fixtures import (
    examples_with_audio,
    real_tokenizer,
    tiny_tokenizer,
    write_dataset,
)
from voxloop.codecs.semantic import save_semantic
from voxloop.distill.data.dataset import iter_examples
from voxloop.distill.student.pack import PackedData, pack_dataset
from voxloop.distill.student.token_cache import (
    cache_folder,
    fill_cache,
    finished_shards,
    with_cached_tokens,
)
from voxloop.errors import VoxloopError
from voxloop.models import weights_sha256

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def encoded(tokenizer, example) -> np.ndarray:
    wav = torch.from_numpy(example.user_audio.astype(np.float32) / 32768)[None]
    return tokenizer.encode(wav)[0].numpy()


def test_cache_holds_the_streams_tokens_and_fills_only_what_is_missing(tmp_path):
    tokenizer = tiny_tokenizer()
    train, valid = examples_with_audio(4, seed=0), examples_with_audio(2, 5, split="valid")
    write_dataset(tmp_path, {"train": train[:2], "valid": valid}, {"train": 2, "valid": 1})
    assert finished_shards(tmp_path) == ["train-00000.npz", "valid-00000.npz"]
    folder = fill_cache(tmp_path, tokenizer, tmp_path, "ab" * 32, batch_size=3)
    assert folder == cache_folder(tmp_path, "ab" * 32)
    first = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert sorted(first) == ["train-00000.npz", "valid-00000.npz"]

    write_dataset(tmp_path, {"train": train, "valid": valid}, {"train": 2, "valid": 1})
    fill_cache(tmp_path, tokenizer, tmp_path, "ab" * 32)  # the new shard only
    again = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    assert len(again) == 3 and all(again[name] == first[name] for name in first)
    heard = list(with_cached_tokens(iter_examples(tmp_path), folder))
    assert [e.id for e in heard] == [e.id for e in train + valid]
    for got, want in zip(heard, train + valid, strict=True):
        assert got.user_audio is None and got.user_codes.dtype == np.int16
        np.testing.assert_array_equal(got.user_codes[0], encoded(tokenizer, want))

    (folder / "valid-00000.npz").unlink()  # a turn with no tokens: said, not guessed
    with pytest.raises(VoxloopError, match="no cached semantic tokens"):
        list(with_cached_tokens(iter_examples(tmp_path), folder))


@pytest.mark.slow
def test_pack_with_worker_processes_equals_one_process(tmp_path):
    """A tokenizer on disk (Whisper tiny.en's encoder, read in each spawned worker):
    two jobs write the cache one job writes, and the pack reads it back."""
    tokenizer = real_tokenizer()
    model = save_semantic(tokenizer.bottleneck, tmp_path / "tokenizer")
    examples = examples_with_audio(6, seed=2)
    for name in ("one", "two"):
        write_dataset(tmp_path / name, {"train": examples}, {"train": 3})
    one = pack_dataset(tmp_path / "one", tmp_path / "one.npz", user_input="semantic",
                       semantic=model)
    two = pack_dataset(tmp_path / "two", tmp_path / "two.npz", user_input="semantic",
                       semantic=model, jobs=2)
    sha = weights_sha256(model)
    for shard in finished_shards(tmp_path / "one"):
        a = np.load(cache_folder(tmp_path / "one", sha) / shard)
        b = np.load(cache_folder(tmp_path / "two", sha) / shard)
        assert all(np.array_equal(a[k], b[k]) for k in ("ids", "tokens", "offsets"))
    packed = PackedData.load(two)
    for i, ex in enumerate(examples):
        np.testing.assert_array_equal(packed.user(i)[0], encoded(tokenizer, ex))
    assert PackedData.load(one).vocab["semantic"]["sha256"] == sha


def test_pack_hears_train_turns_on_every_skip_and_the_rest_from_the_start(tmp_path):
    """Each train turn once per skip (its tokens: the audio heard from that many samples
    in, cached in the skip's own folder); valid turns once, heard from the start."""
    tokenizer = tiny_tokenizer()
    train, valid = examples_with_audio(3, seed=0), examples_with_audio(2, 5, split="valid")
    write_dataset(tmp_path, {"train": train, "valid": valid}, {"train": 2, "valid": 1})
    out = pack_dataset(tmp_path, tmp_path / "two.npz", user_input="semantic",
                       semantic=tokenizer, batch_size=2, train_skips_samples=(0, 320))
    data = PackedData.load(out)
    ids = data.id.tolist()
    assert sorted(data.id[data.indices("train")].tolist()) == sorted(
        [e.id for e in train] + [f"{e.id}@320" for e in train])
    assert sorted(data.id[data.indices("valid")].tolist()) == sorted(e.id for e in valid)
    for ex in train:
        shifted = dataclasses.replace(ex, user_audio=ex.user_audio[320:])
        np.testing.assert_array_equal(data.user(ids.index(ex.id))[0], encoded(tokenizer, ex))
        np.testing.assert_array_equal(data.user(ids.index(f"{ex.id}@320"))[0],
                                      encoded(tokenizer, shifted))
    assert not np.array_equal(data.user(ids.index(train[0].id)),
                              data.user(ids.index(f"{train[0].id}@320")))

    folder = fill_cache(tmp_path, tokenizer, tmp_path, "ab" * 32, skip_samples=320)
    assert folder == cache_folder(tmp_path, "ab" * 32, 320) != cache_folder(tmp_path, "ab" * 32)
    heard = {e.id: e.user_codes[0] for e in with_cached_tokens(iter_examples(tmp_path), folder)
             if e.split == "train"}
    np.testing.assert_array_equal(heard[train[1].id],
                                  data.user(ids.index(f"{train[1].id}@320"))[0])

    for bad in ((), (0, 0), (640,), (-1,)):
        with pytest.raises(VoxloopError, match="train skips"):
            pack_dataset(tmp_path, tmp_path / "x.npz", user_input="semantic",
                         semantic=tokenizer, train_skips_samples=bad)


def test_a_pack_reads_the_shards_there_when_it_began(tmp_path, monkeypatch):
    """A synth still writing adds shards while a pack (or an eval of the folder) reads:
    the pack holds the turns of the shards it found and tokenized, not an error about the
    new shard's missing tokens."""
    from voxloop.distill.student import pack, token_cache

    tokenizer = tiny_tokenizer()
    train = examples_with_audio(4, seed=0)
    write_dataset(tmp_path, {"train": train[:2]}, {"train": 2})
    fill = token_cache.fill_cache

    def fill_then_a_shard_lands(*args, **kwargs):
        folder = fill(*args, **kwargs)
        write_dataset(tmp_path, {"train": train}, {"train": 2})
        return folder

    monkeypatch.setattr(token_cache, "fill_cache", fill_then_a_shard_lands)
    tokens = (tokenizer, tmp_path, {"sha256": "ab" * 32})
    turns = list(pack._user_turns(tmp_path, "semantic", tokens, batch_size=3, jobs=1,
                                  progress=False, skip_samples=0,
                                  present=finished_shards(tmp_path)))
    assert [t.id for t in turns] == [e.id for e in train[:2]]
    assert len(finished_shards(tmp_path)) == 2  # the shard that landed is there, unread


def test_a_pack_of_some_splits_tokenizes_those_only(tmp_path):
    from voxloop.distill.student import pack

    train, valid = examples_with_audio(4, seed=0), examples_with_audio(2, 5, split="valid")
    write_dataset(tmp_path, {"train": train, "valid": valid}, {"train": 2, "valid": 1})
    tokens = (tiny_tokenizer(), tmp_path, {"sha256": "cd" * 32})
    turns = list(pack._user_turns(tmp_path, "semantic", tokens, batch_size=3, jobs=1,
                                  progress=False, skip_samples=0,
                                  present=finished_shards(tmp_path, ("valid",))))
    assert [t.id for t in turns] == [e.id for e in valid]
    cached = sorted(p.name for p in cache_folder(tmp_path, "cd" * 32).glob("*.npz"))
    assert cached == ["valid-00000.npz"]


def test_the_pack_command_packs_some_splits_only_for_a_model(tmp_path, capsys):
    from voxloop.cli import main

    train, valid = examples_with_audio(4, seed=0), examples_with_audio(2, 5, split="valid")
    write_dataset(tmp_path, {"train": train, "valid": valid}, {"train": 2, "valid": 1})
    out = tmp_path / "valid.npz"
    assert main(["distill", "pack", str(tmp_path), str(out), "--splits", "valid"]) == 1
    assert "needs the vocabularies" in capsys.readouterr().err and not out.exists()
