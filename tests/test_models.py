"""voxloop.models' model folders: what ``save_model_folder`` writes, ``load_model_folder``
reads back, and the errors for a folder that is not one."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from voxloop.errors import VoxloopError
from voxloop.models import load_model_folder, save_model_folder

STATE = {"weight": torch.linspace(-1, 1, 6).view(2, 3), "count": torch.tensor([3, 4])}


def test_a_model_folder_round_trips_as_float16_with_its_kind(tmp_path):
    folder = save_model_folder(tmp_path / "m", STATE, {"kind": "toy", "width": 3}, "# card\n",
                               files={"vocab.json": "{}\n"})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors", "vocab.json"]
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt", "kind": "toy"}
        assert f.get_tensor("weight").dtype == torch.float16
        assert f.get_tensor("count").dtype == torch.int64  # only floating tensors shrink
    config, weights = load_model_folder(folder, "a toy", "voxloop toy train", kind="toy")
    assert config == json.loads((folder / "config.json").read_text()) == {"kind": "toy",
                                                                           "width": 3}
    assert weights["weight"].dtype == torch.float32 and weights["count"].dtype == torch.int64
    torch.testing.assert_close(weights["weight"], STATE["weight"], atol=1e-3, rtol=1e-3)
    assert torch.equal(weights["count"], STATE["count"])


def test_not_a_model_folder_says_what_trains_one(tmp_path):
    with pytest.raises(VoxloopError, match=r"is not an end-of-turn model folder: it needs "
                       r"config.json and model.safetensors \(train one with `voxloop x`\)"):
        load_model_folder(tmp_path, "an end-of-turn model", "voxloop x")
    save_model_folder(tmp_path / "m", STATE, {"kind": "other"})
    with pytest.raises(VoxloopError, match=r"holds a 'other', not a toy \(toy\)"):
        load_model_folder(tmp_path / "m", "a toy", "voxloop toy train", kind="toy")
    assert load_model_folder(tmp_path / "m", "a toy", "voxloop toy train")[0]["kind"] == "other"


def test_a_model_is_named_so_it_is_found_from_anywhere(tmp_path, monkeypatch):
    """A bundled model by its name; any other folder by its absolute path (a name alone
    would not be found, or would find a bundled model of that name); and a semantic
    tokenizer is looked for among semantic tokenizers only."""
    from voxloop.codecs.semantic_tokens import find_semantic
    from voxloop.models import DEFAULT_SEMANTIC, find_model, model_name, models_dir

    assert model_name(models_dir() / DEFAULT_SEMANTIC) == DEFAULT_SEMANTIC
    save_model_folder(tmp_path / "runs" / DEFAULT_SEMANTIC, STATE, {"kind": "other"})
    monkeypatch.chdir(tmp_path / "runs")
    named = model_name(DEFAULT_SEMANTIC)  # the one here, under runs/: not the bundled one
    assert named == str(tmp_path / "runs" / DEFAULT_SEMANTIC)
    assert find_model(named, "toy", marker="model.safetensors") == tmp_path / "runs" / \
        DEFAULT_SEMANTIC
    with pytest.raises(VoxloopError, match=r"bundled semantic tokenizers \['voxloop-semantic'\]"):
        find_semantic("nope")


def test_weights_written_over_a_card_keep_it_under_a_note_that_it_is_the_old_ones(tmp_path):
    folder = save_model_folder(tmp_path / "m", STATE, {"kind": "toy"}, "# toy\n\n91 % right\n")
    save_model_folder(folder, STATE, {"kind": "toy"})  # new weights, no card of their own
    card = (folder / "README.md").read_text()
    assert card.startswith("> New weights were written here") and card.endswith("91 % right\n")
    save_model_folder(folder, STATE, {"kind": "toy"})
    assert (folder / "README.md").read_text() == card  # one note, however often
    save_model_folder(folder, STATE, {"kind": "toy"}, "# toy\n\n93 % right\n")
    assert (folder / "README.md").read_text() == "# toy\n\n93 % right\n"
    assert not (save_model_folder(tmp_path / "n", STATE, {"kind": "toy"}) / "README.md").exists()
