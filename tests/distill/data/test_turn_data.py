"""End-of-turn data and model (issue 15): the examples' labels and audio, shards that load
back, a head that learns a toy rule, its float16 export and the tokenizer pin. No TTS, no
Whisper: a fake synthesizer and a fake tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from voxloop.audio import MODEL_RATE_HZ
from voxloop.codecs.end_of_turn import (
    EndOfTurn,
    EndOfTurnConfig,
    EndOfTurnHead,
    load_end_of_turn,
    load_head,
    save_end_of_turn,
)
from voxloop.distill.data.turn_data import (
    FILLERS,
    KINDS,
    TurnText,
    build_shard,
    load_split,
    speak,
    texts_for,
    write_shard,
)
from voxloop.distill.data.turn_train import TurnTrainSettings, measure, predict, train_head
from voxloop.errors import VoxloopError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_synthesize(text: str, voice: str) -> tuple[np.ndarray, int]:
    """A 100 ms tone per word at 8 kHz, with silence around it (the trimming's job)."""
    words = len(text.replace(",", " ").split())
    tone = 0.5 * np.sin(np.arange(800 * words) * 0.3).astype(np.float32)
    return np.concatenate([np.zeros(400, np.float32), tone, np.zeros(400, np.float32)]), 8000


class FakeTokenizer:
    """One token per 40 ms of audio: 1 where it is loud, 0 where it is silent."""

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        frames = wav[0, :wav.shape[1] // 640 * 640].reshape(-1, 640)
        return (frames.abs().amax(dim=1) > 0.01).long()[None]


def test_each_question_gives_a_finished_and_an_unfinished_example():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        turns = texts_for("what is seven times three", rng)
        assert [t.kind for t in turns[:2]] == ["complete", "prefix"]
        assert [t.finished for t in turns[:2]] == [1, 0]
        prefix = turns[1].segments[0].split()
        assert 1 <= len(prefix) <= 4 and "what is seven times three".startswith(" ".join(prefix))
        third = turns[2]
        seen.add(third.kind)
        if third.kind == "paused":
            assert " ".join(third.segments) == "what is seven times three"
            assert 300 <= third.pause_ms < 1500
        if third.kind == "filler_end":
            assert third.segments[0].endswith(FILLERS) and third.finished == 0
    assert seen == {"paused", "filler_end", "filler"}
    assert [t.kind for t in texts_for("hello", rng)] == ["complete", "filler"]


def test_spoken_examples_have_the_pause_and_a_short_trailing_silence():
    rng = np.random.default_rng(1)
    audio = speak(TurnText("paused", ("what is", "seven"), 800), "x", rng, fake_synthesize)
    loud = np.flatnonzero(np.abs(audio) > 0.05)
    gaps = np.diff(loud)
    assert gaps.max() == pytest.approx(800 * MODEL_RATE_HZ / 1000, abs=20)  # the pause
    trail_ms = (len(audio) - loud[-1]) * 1000 / MODEL_RATE_HZ
    assert 30 <= trail_ms <= 160


def test_shards_round_trip(tmp_path):
    class Item:
        def __init__(self, i):
            self.id, self.prompt_text, self.user_voice = f"q{i}", "what is two plus two", "v"

    shard = build_shard([Item(0), Item(1)], FakeTokenizer(), seed=0, synthesize=fake_synthesize)
    write_shard(tmp_path / "train-0000.npz", shard)
    data = load_split(tmp_path, "train")
    assert len(data["sequences"]) == len(data["labels"]) == 6
    assert list(data["labels"][:2]) == [1, 0] and data["texts"][0] == "what is two plus two"
    assert [KINDS[k] for k in data["kinds"][:2]] == ["complete", "prefix"]
    assert all(s.dtype == np.int64 and len(s) > 0 for s in data["sequences"])
    assert load_split(tmp_path, "valid")["labels"].shape == (0,)


def toy_split(n: int, seed: int) -> dict:
    """Finished iff the row ends in token 1: order matters, the pool head's last vector
    sees it too."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(2, 16, rng.integers(3, 12)) for _ in range(n)]
    labels = rng.integers(0, 2, n).astype(np.int8)
    for s, y in zip(sequences, labels, strict=True):
        s[-1] = 1 if y else 0
    return {"sequences": sequences, "labels": labels, "kinds": np.where(labels, 0, 1)}


@pytest.mark.parametrize("arch", ["gru", "pool"])
def test_a_head_learns_a_toy_rule(arch):
    torch.manual_seed(0)
    table = torch.randn(16, 8)
    config = EndOfTurnConfig(arch=arch, hidden_dim=16, code_dim=8, codebook_size=16)
    settings = TurnTrainSettings(epochs=15, batch_size=32, lr=1e-2)
    head, loss = train_head(config, table, toy_split(160, 0), toy_split(64, 1), settings,
                            progress=lambda *_: None)
    valid = toy_split(64, 2)
    result = measure(predict(head, table, valid), valid["labels"], valid["kinds"])
    assert result["accuracy"] > 0.9 and loss < 0.4
    assert set(result["accuracy_by_kind"]) == {"complete", "prefix"}


def test_export_is_float16_and_loads_back(tmp_path):
    from safetensors.torch import load_file

    head = EndOfTurnHead(EndOfTurnConfig(code_dim=8, codebook_size=16, hidden_dim=4))
    folder = save_end_of_turn(head, tmp_path / "eot", card="# card\n")
    assert all(v.dtype == torch.float16 for v in load_file(folder / "model.safetensors")
               .values())
    loaded = load_head(folder)
    x, lengths = torch.randn(2, 5, 8), torch.tensor([5, 3])
    assert torch.allclose(loaded(x, lengths), head(x, lengths), atol=1e-2)
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "voxloop-end-of-turn" and (folder / "README.md").is_file()


def test_a_model_of_another_tokenizer_is_refused(tmp_path):
    head = EndOfTurnHead(EndOfTurnConfig(semantic_sha256="0" * 64))
    save_end_of_turn(head, tmp_path / "eot")
    with pytest.raises(VoxloopError, match="retrain it"):
        load_end_of_turn(tmp_path / "eot")
    with pytest.raises(VoxloopError, match="no end-of-turn model at"):
        load_end_of_turn(tmp_path)
    with pytest.raises(VoxloopError, match="is not an end-of-turn model folder"):
        load_head(tmp_path)


def test_the_stream_asks_with_every_token_so_far():
    """``probability`` at a pause = the probabilities of the whole row of tokens (the stream's
    and a flush's on a snapshot), and the stream goes on unchanged."""
    class Stream:
        def __init__(self):
            self.encoder, self.samples = None, 0

    class Tokenizer:
        def codebook_vectors(self):
            return torch.eye(4)

        def init_state(self, batch):
            return Stream()

        def step(self, state, wav):
            state.samples += wav.shape[1]
            return torch.full((1, wav.shape[1] // 100), 2)

        def flush(self, state):
            return torch.tensor([[3]])

    head = EndOfTurnHead(EndOfTurnConfig(code_dim=4, codebook_size=4, hidden_dim=4))
    model = EndOfTurn(Tokenizer(), head)
    state = model.init_state()
    model.push(state, torch.zeros(300))
    p = model.probability(state)
    assert p == pytest.approx(float(model.probabilities([torch.tensor([2, 2, 2, 3])])[0]))
    assert state.semantic.samples == 300 and len(state.tokens) == 1
