"""``voxloop distill decoder-data``: answers once per text, held out by text, user voices by
split; audio and codes come straight from the shards."""

from __future__ import annotations

import numpy as np
import pytest

from voxloop.codecs.decoder_data import read_clips
from voxloop.distill.data.dataset import DialogueExample, shard_name, write_manifest, write_shard
from voxloop.distill.data.decoder_data import DecoderDataSettings, build_decoder_data, heldout_text
from voxloop.errors import VoxloopError

CODEC = {"name": "voxloop-codec-16k", "sha256": "ab" * 32}


def _example(i: int, split: str, answer: str) -> DialogueExample:
    rng = np.random.default_rng(i)
    frames = 3 + i % 4
    return DialogueExample(
        id=f"x-{i}", split=split, intent="x", user_voice=f"flite:v{i % 3}",
        prompt_text=f"question {i}", asr_text=f"question {i}", answer_text=answer,
        user_codes=rng.integers(0, 1024, (8, frames)).astype(np.int16),
        answer_codes=rng.integers(0, 1024, (8, frames + 1)).astype(np.int16),
        user_audio=rng.integers(-999, 999, frames * 640).astype(np.int16),
        answer_audio=rng.integers(-999, 999, (frames + 1) * 640).astype(np.int16))


def _dataset(folder, answers: list[str], codec: dict = CODEC):
    splits = {}
    for index, split in enumerate(("train", "heldout_voice")):
        examples = [_example(10 * index + i, split, a) for i, a in enumerate(answers)]
        write_shard(folder / "shards" / shard_name(split, 0), examples, codec)
        splits[split] = {"examples": len(examples), "shards": {shard_name(split, 0): len(examples)}}
    write_manifest(folder, {"codec": codec, "splits": splits})
    return folder


def test_answers_once_per_text_held_out_by_text(tmp_path):
    texts = [f"The answer is {n}." for n in range(40)]
    held = {t for t in texts if heldout_text(t, 10.0)}
    assert 0 < len(held) < len(texts)
    data = _dataset(tmp_path / "d", texts + texts[:5])  # repeated answers count once
    build_decoder_data(DecoderDataSettings(data=(str(data),), out=str(tmp_path / "out"),
                                           heldout_percent=10.0))
    train, codec = read_clips(tmp_path / "out", "train")
    heldout, _ = read_clips(tmp_path / "out", "heldout")
    assert codec == CODEC
    assert {c.text for c in heldout} == held
    assert {c.text for c in train} == set(texts) - held
    assert len(train) + len(heldout) == len(texts)
    first = next(c for c in train + heldout if c.text == texts[0])
    assert first.id == "x-10"  # the first shard in manifest order (splits sorted by name)
    example = _example(10, "heldout_voice", texts[0])
    assert np.array_equal(first.audio, example.answer_audio)
    assert np.array_equal(first.codes, example.answer_codes)
    assert first.voice == "piper:joe"


def test_user_side_holds_out_the_held_out_voices(tmp_path):
    data = _dataset(tmp_path / "d", ["a.", "b.", "c."])
    build_decoder_data(DecoderDataSettings(data=(str(data),), out=str(tmp_path / "out"),
                                           side="user"))
    train, _ = read_clips(tmp_path / "out", "train")
    heldout, _ = read_clips(tmp_path / "out", "heldout")
    assert [c.id for c in train] == ["x-0", "x-1", "x-2"]
    assert [c.id for c in heldout] == ["x-10", "x-11", "x-12"]
    assert np.array_equal(heldout[1].codes, _example(11, "heldout_voice", "b.").user_codes)


def test_datasets_of_different_codecs_are_refused(tmp_path):
    a = _dataset(tmp_path / "a", ["x."])
    b = _dataset(tmp_path / "b", ["y."], codec={"name": "other", "sha256": "cd" * 32})
    with pytest.raises(VoxloopError, match="another codec"):
        build_decoder_data(DecoderDataSettings(data=(str(a), str(b)), out=str(tmp_path / "o")))


def test_a_dataset_without_audio_takes_no_answer_from_one_with_it(tmp_path):
    """Shards built with --no-keep-audio give no clip, so they leave every answer text to
    the datasets after them."""
    from dataclasses import replace

    texts = [f"The answer is {n}." for n in range(12)]
    silent = tmp_path / "silent"
    examples = [replace(_example(i, "train", t), user_audio=None, answer_audio=None)
                for i, t in enumerate(texts)]
    write_shard(silent / "shards" / shard_name("train", 0), examples, CODEC)
    write_manifest(silent, {"codec": CODEC, "splits": {"train": {
        "examples": len(texts), "shards": {shard_name("train", 0): len(texts)}}}})
    voiced = _dataset(tmp_path / "voiced", texts)
    build_decoder_data(DecoderDataSettings(data=(str(silent), str(voiced)),
                                           out=str(tmp_path / "out"), heldout_percent=10.0))
    train, _ = read_clips(tmp_path / "out", "train")
    heldout, _ = read_clips(tmp_path / "out", "heldout")
    assert {c.text for c in train + heldout} == set(texts)
