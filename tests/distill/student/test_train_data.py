"""A dataset folder packed once into an evaluation's or training's ``out/data.npz``: the
cache is used again only for the same dataset as far as it was built then."""

from __future__ import annotations

from tests.distill.student.fixtures import tiny_examples
from tests.distill.student.semantic_fixtures import write_dataset
from voxloop.distill.data.dataset import shard_name, shard_path, write_shard
from voxloop.distill.student.train_data import load_data


def test_a_cached_pack_follows_its_dataset(tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    write_dataset(first, {"train": tiny_examples(4), "valid": tiny_examples(2, 5, "valid")},
                  {"train": 3, "valid": 1})
    assert len(load_data(first, tmp_path / "out")) == 6
    assert len(load_data(first, tmp_path / "out")) == 6  # (the cache)
    # the build went on: its third train shard is packed too
    write_shard(shard_path(first, shard_name("train", 2)), tiny_examples(2, 9),
                {"name": "voxloop-codec-16k", "sha256": "x"})
    assert len(load_data(first, tmp_path / "out")) == 8
    # another dataset, the same --out: packed from it, not read from the cache
    write_dataset(other, {"train": tiny_examples(2, 3)}, {"train": 1})
    assert len(load_data(other, tmp_path / "out")) == 2
