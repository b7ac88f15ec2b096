"""End-of-turn data and model (issue 15): the examples' labels and audio, shards that load
back, a head that learns a toy rule, its float16 export and the tokenizer pin. No TTS, no
Whisper: a fake synthesizer and a fake tokenizer."""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from voxloop.audio import MODEL_RATE_HZ
from voxloop.codecs.end_of_turn import (
    EndOfTurn,
    EndOfTurnConfig,
    EndOfTurnHead,
    load_end_of_turn,
    load_heads,
    save_end_of_turn,
)
from voxloop.distill.data.turn_build import write_shard
from voxloop.distill.data.turn_data import (
    FILLERS,
    KINDS,
    TurnDataSettings,
    TurnText,
    build_shard,
    is_trained_question,
    load_split,
    said_in_one_breath,
    speak,
    spoken_segments,
    texts_for,
    trim_speech,
    turn_label,
)
from voxloop.distill.data.turn_train import (
    TurnTrainSettings,
    measure,
    predict,
    train_command,
    train_head,
)
from voxloop.distill.data.word_cut import head_end_sample
from voxloop.errors import VoxloopError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fake_synthesize(text: str, voice: str) -> tuple[np.ndarray, int]:
    """A 100 ms tone per word at 8 kHz, with silence around it (the trimming's job)."""
    words = len(text.replace(",", " ").split())
    tone = 0.5 * np.sin(np.arange(800 * words) * 0.3).astype(np.float32)
    return np.concatenate([np.zeros(400, np.float32), tone, np.zeros(400, np.float32)]), 8000


class FakeTokenizer:
    """One encoder frame per 40 ms of audio, (peak, 0.01), pooled alone into that vector:
    its token is 1 where it is loud, 0 where it is silent."""

    def encode(self, wav: torch.Tensor, output: str = "tokens") -> torch.Tensor:
        frames = wav[0, :wav.shape[1] // 640 * 640].reshape(-1, 640)
        peaks = frames.abs().amax(dim=1)
        groups = torch.stack([peaks, torch.full_like(peaks, 0.01)], dim=1)[None, :, None]
        if output == "frames":
            return groups
        vectors = self.pool_groups(groups)
        return vectors if output == "pooled" else self.quantize(vectors)

    def pool_groups(self, groups: torch.Tensor) -> torch.Tensor:
        return groups.mean(2)

    def quantize(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors.argmax(dim=-1) ^ 1


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


def test_a_cut_that_leaves_a_whole_trained_question_is_a_finished_example():
    """"thanks" is a question of its own: the prefix "thanks" of "thanks so much" must not
    teach that those words are unfinished. Held-out phrasings are not consulted."""
    from voxloop.distill.teachers.domain.data import load_domain
    from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE

    assert is_trained_question("Thanks") and not is_trained_question("thanks so")
    held_out = [i["phrasings"][HELDOUT_TEMPLATE] for i in load_domain()["intents"]]
    assert not any(is_trained_question(text) for text in held_out)
    rng = np.random.default_rng(0)
    heads, breaths = {}, set()
    for _ in range(50):
        cut = texts_for("thanks so much", rng)[1]
        if cut.one_breath:  # cut out of "thanks so much" as said: a sentence going on
            breaths.add((cut.segments, cut.heard, cut.kind))
        else:
            heads[cut.segments[0]] = (cut.kind, cut.finished)
    assert heads == {"thanks": ("complete", 1), "thanks so": ("prefix", 0)}
    assert breaths == {(("thanks", "so much"), 1, "prefix"), (("thanks so", "much"), 1, "prefix")}


def word_tones(text: str, voice: str) -> tuple[np.ndarray, int]:
    """A rising chirp per word at 16 kHz (its start pitch and length from the word: 200-330
    ms; a sweep, so a word's frames differ as a spoken word's do), with silence around;
    ``voice`` "slow" says every word 30 % longer (as a head said alone may be)."""
    parts = [np.zeros(800, np.float32)]
    for word in text.replace(",", " ").split():
        code = zlib.crc32(word.encode())
        n = int((3200 + 80 * (code % 27)) * (1.3 if voice == "slow" else 1.0))
        hz = (200 + 150 * (code % 23)) * (1 + np.arange(n) / n)  # up an octave
        parts.append(0.5 * np.sin(2 * np.pi * np.cumsum(hz) / MODEL_RATE_HZ).astype(np.float32))
    return np.concatenate([*parts, np.zeros(800, np.float32)]), MODEL_RATE_HZ


def test_a_one_breath_cut_ends_where_the_head_words_end():
    """Tones for words: the head said alone at another pace still finds the end of its
    words inside the whole (within 30 ms), and the example keeps only them."""
    whole = trim_speech(word_tones("what is seven times three", "v")[0])
    for k in (1, 2, 3, 4):
        words = " ".join(["what", "is", "seven", "times", "three"][:k])
        head = trim_speech(word_tones(words, "slow")[0])
        true_end = len(trim_speech(word_tones(words, "v")[0]))
        end = head_end_sample(whole, head, MODEL_RATE_HZ)
        assert abs(end - true_end) <= 0.03 * MODEL_RATE_HZ, (k, end, true_end)
    rng = np.random.default_rng(0)
    turn = TurnText("prefix", ("what is seven", "times three"), one_breath=True, heard=1)
    audio, spoken = speak(turn, "v", rng, word_tones)
    assert spoken == turn  # the cut was found
    loud = np.flatnonzero(np.abs(audio) > 0.05)  # above the added noise
    said_ms = (loud[-1] - loud[0]) * 1000 / MODEL_RATE_HZ
    alone = trim_speech(word_tones("what is seven", "v")[0])
    assert abs(said_ms - len(alone) * 1000 / MODEL_RATE_HZ) <= 30
    paused, _ = speak(replace(turn, kind="paused", heard=0, pause_ms=700), "v", rng,
                      word_tones)
    gaps = np.diff(np.flatnonzero(np.abs(paused) > 0.05))
    assert gaps.max() == pytest.approx(0.7 * MODEL_RATE_HZ, abs=0.03 * MODEL_RATE_HZ)


def test_labels_say_which_examples_were_cut_out_of_one_utterance():
    turns = [TurnText("prefix", ("what is", "seven"), one_breath=True, heard=1),
             TurnText("paused", ("what is", "seven"), 500, one_breath=True),
             TurnText("paused", ("what is", "seven"), 500), TurnText("prefix", ("what is",)),
             TurnText("filler", ("um, what is seven",))]
    labels = [turn_label(t) for t in turns]
    assert labels[:3] == ["what is [seven]", "what is / seven", "what is | seven"]
    assert [said_in_one_breath(label) for label in labels] == [True, True, False, False, False]


def test_a_one_breath_cut_that_finds_no_boundary_speaks_the_parts_apart():
    """A head the alignment matches to the whole's very end leaves no tail: the parts
    are said alone instead of a "prefix" that is the whole question."""
    def same_tone(text, voice):
        return 0.5 * np.sin(np.arange(1600 * len(text.split())) * 0.3).astype(np.float32), \
            MODEL_RATE_HZ

    def say(text):
        return trim_speech(same_tone(text, "v")[0])

    turn = TurnText("prefix", ("a b c", "d"), one_breath=True, heard=1)
    [piece], spoken = spoken_segments(turn, say, MODEL_RATE_HZ)
    assert len(piece) == len(say("a b c"))
    # labelled as spoken: the head alone, not a cut out of one utterance
    assert spoken == TurnText("prefix", ("a b c",)) and turn_label(spoken) == "a b c"
    assert not said_in_one_breath(turn_label(spoken))
    paused = replace(turn, kind="paused", heard=0, pause_ms=500)
    pieces, spoken = spoken_segments(paused, say, MODEL_RATE_HZ)
    assert len(pieces) == 2 and turn_label(spoken) == "a b c | d"
    # a head that is a whole trained question, said alone, is a complete one
    whole = TurnText("prefix", ("what is the capital of france", "please"), one_breath=True,
                     heard=1)
    _, spoken = spoken_segments(whole, say, MODEL_RATE_HZ)
    assert spoken.kind == "complete" and spoken.finished


def test_spoken_examples_have_the_pause_and_a_short_trailing_silence():
    rng = np.random.default_rng(1)
    audio, _ = speak(TurnText("paused", ("what is", "seven"), 800), "x", rng, fake_synthesize)
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
    assert [len(p) for p in data["pooled"]] == [len(s) for s in data["sequences"]]
    assert all(p.dtype == np.float16 and p.shape[1] == 2 for p in data["pooled"])
    assert all(np.array_equal(e, p) for e, p in zip(data["encoder"], data["pooled"],
                                                      strict=True))  # one frame per token
    assert data["sequences"][0].max() == 1 and data["sequences"][0][0] == 0  # lead silence
    assert not data["augmented"].any()
    assert load_split(tmp_path, "valid")["labels"].shape == (0,)


def test_augmented_examples_say_the_same_words_differently(tmp_path):
    """Augmentation draws from its own random stream: the same texts, cuts and labels as an
    unaugmented build, other audio (another length: the speed changed)."""
    class Item:
        def __init__(self, i):
            self.id, self.prompt_text, self.user_voice = f"q{i}", "what is two plus two", "v"

    items = [Item(i) for i in range(4)]
    plain = build_shard(items, FakeTokenizer(), seed=0, synthesize=fake_synthesize)
    mixed = build_shard(items, FakeTokenizer(), seed=0, synthesize=fake_synthesize,
                        augment_share=0.5)
    assert mixed["texts"] == plain["texts"]
    assert np.array_equal(mixed["labels"], plain["labels"])
    assert 0 < sum(a is not None for a in mixed["augmentations"]) < len(mixed["texts"])
    lengths = np.diff(mixed["offsets"]) != np.diff(plain["offsets"])
    augmented = np.array([a is not None and a["speed"] != 1.0
                          for a in mixed["augmentations"]])
    assert lengths[~augmented].sum() == 0 and lengths[augmented].any()
    write_shard(tmp_path / "train-0000.npz", mixed)
    assert list(load_split(tmp_path, "train")["augmented"]) == \
        [a is not None for a in mixed["augmentations"]]


def toy_split(n: int, seed: int, table: torch.Tensor) -> dict:
    """Finished iff the row ends in token 1: order matters, the pool head's last vector
    sees it too. Its pooled rows: each token's vector in ``table`` plus a little noise; its
    encoder rows: those in a wider space (a fixed random map, more noise)."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(2, 16, rng.integers(3, 12)) for _ in range(n)]
    labels = rng.integers(0, 2, n).astype(np.int8)
    for s, y in zip(sequences, labels, strict=True):
        s[-1] = 1 if y else 0
    pooled = [(table[s].numpy() + 0.1 * rng.standard_normal((len(s), table.shape[1])))
              .astype(np.float16) for s in sequences]
    wider = np.random.default_rng(99).standard_normal((table.shape[1], 12))
    encoder = [(p.astype(np.float64) @ wider + 0.2 * rng.standard_normal((len(p), 12)))
               .astype(np.float16) for p in pooled]
    return {"sequences": sequences, "pooled": pooled, "encoder": encoder, "labels": labels,
            "kinds": np.where(labels, 0, 1)}


@pytest.mark.parametrize("arch", ["gru", "pool"])
@pytest.mark.parametrize("inputs", ["codes", "pooled", "encoder"])
def test_a_head_learns_a_toy_rule(arch, inputs):
    torch.manual_seed(0)
    table = torch.randn(16, 8)
    config = EndOfTurnConfig(arch=arch, inputs=inputs, hidden_dim=16,
                             code_dim=12 if inputs == "encoder" else 8, codebook_size=16)
    settings = TurnTrainSettings(epochs=15, batch_size=32, lr=1e-2)
    head, loss = train_head(config, table, toy_split(160, 0, table), toy_split(64, 1, table),
                            settings, progress=lambda *_: None)
    valid = toy_split(64, 2, table)
    result = measure(predict(head, table, valid), valid["labels"], valid["kinds"])
    assert result["accuracy"] > 0.9 and loss < 0.4
    assert set(result["accuracy_by_kind"]) == {"complete", "prefix"}


def test_the_progress_line_reports_the_epochs_mean_training_loss():
    """With nothing learned (lr 0, no noise) the epoch's training loss is the loss of the
    same examples measured as validation: the mean over every batch, not the last one's."""
    torch.manual_seed(0)
    table = torch.randn(16, 8)
    config = EndOfTurnConfig(arch="gru", inputs="codes", hidden_dim=16, code_dim=8,
                             codebook_size=16)
    examples = toy_split(70, 0, table)  # batches of 32, 32 and 6
    lines: list[str] = []
    train_head(config, table, examples, examples,
               TurnTrainSettings(epochs=1, batch_size=32, lr=0.0, token_noise=0.0),
               progress=lines.append)
    train_loss, valid_loss = (float(part.split()[-1]) for part in lines[-1].split(", "))
    assert train_loss == pytest.approx(valid_loss, abs=2e-3)


def test_noise_replaces_frames_with_codebook_rows_or_real_frames_of_the_batch():
    from voxloop.distill.data.turn_train import add_noise

    torch.manual_seed(0)
    table = torch.full((5, 3), 7.0)
    vectors = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    vectors[1, 2:] = -1.0  # padding past the second row's length
    lengths = torch.tensor([4, 2])
    original = vectors.clone()
    coded = vectors.clone()
    add_noise(coded, lengths, table, 0.5, from_batch=False)
    changed = (coded != original).any(-1)
    assert changed.any() and (coded[changed] == 7.0).all()
    add_noise(vectors, lengths, table, 1.0, from_batch=True)
    real = {tuple(original[0, i].tolist()) for i in range(4)} | \
        {tuple(original[1, i].tolist()) for i in range(2)}
    assert {tuple(v.tolist()) for v in vectors.flatten(0, 1)} <= real  # never padding


def test_ranking_measures_count_pairs_and_the_unfinished_quantile():
    from voxloop.distill.data.turn_train import auc

    labels = np.array([1, 0, 1, 0])
    assert auc(np.array([0.9, 0.8, 0.3, 0.1]), labels) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)  # a tie: half
    probs = np.concatenate([np.linspace(0, 0.5, 100), [0.55, 0.7, 0.96, 0.99]])
    labels = np.array([0] * 100 + [1] * 4)
    m = measure(probs, labels, np.where(labels, 0, 1))
    assert m["auc"] == 1.0 and m["fast_at_5pct_cutoff"] == 1.0
    kinds = np.array([KINDS.index(k) for k in ("complete", "prefix", "prefix", "paused")])
    m = measure(np.array([0.9, 0.2, 0.8, 0.7]), np.array([1, 0, 0, 1]), kinds,
                np.array([False, True, False, True]))
    assert m["accuracy_by_kind"] == {"complete": 1.0, "prefix": 0.0, "prefix, one breath": 1.0,
                                     "paused, one breath": 1.0}
    m = measure(np.array([0.2, 0.9]), np.array([1, 1]), np.array([0, 0]))
    assert m["auc"] is None and m["fast_at_5pct_cutoff"] is None  # no unfinished to rank


def test_a_training_run_leaves_the_bundled_model_alone_unless_told():
    """A run with the default settings once replaced models/voxloop-end-of-turn; the bundle
    changes only where --export names it, and the card's command says so."""
    default = TurnTrainSettings()
    assert not default.export.startswith("models")
    data = asdict(TurnDataSettings())
    assert "--export" not in train_command(data, asdict(default))
    bundled = asdict(replace(default, export="models/voxloop-end-of-turn"))
    assert train_command(data, bundled).endswith("--export models/voxloop-end-of-turn")


def test_the_card_command_names_the_seeds_it_was_made_with():
    """Heads trained with --train-seed 3 on --data-seed 1 items are other heads: a card
    whose command left the seeds out made the same command for two different models."""
    data, train = asdict(TurnDataSettings()), asdict(TurnTrainSettings())
    assert "seed " not in train_command(data, train)  # defaults stay unsaid (--seeds N only)
    command = train_command(asdict(replace(TurnDataSettings(), data_seed=1)),
                            asdict(replace(TurnTrainSettings(), train_seed=3, lr=1e-3)))
    assert "--data-seed 1 " in command and "--train-seed 3 " in command
    assert "--lr 0.001 " in command


def test_export_is_float16_and_loads_back(tmp_path):
    from safetensors.torch import load_file

    head = EndOfTurnHead(EndOfTurnConfig(code_dim=8, codebook_size=16, hidden_dim=4))
    folder = save_end_of_turn(head, tmp_path / "eot", card="# card\n")
    assert all(v.dtype == torch.float16 for v in load_file(folder / "model.safetensors")
               .values())
    [loaded] = load_heads(folder)
    x, lengths = torch.randn(2, 5, 8), torch.tensor([5, 3])
    assert torch.allclose(loaded(x, lengths), head(x, lengths), atol=1e-2)
    config = json.loads((folder / "config.json").read_text())
    assert config["kind"] == "voxloop-end-of-turn" and (folder / "README.md").is_file()


class QuantizingTokenizer:
    """Codebook: the 4 unit vectors; encoder frames pool by their mean; a pooled vector's
    token is its largest coordinate."""

    def codebook_vectors(self):
        return torch.eye(4)

    def pool_groups(self, groups):
        return groups.mean(2)

    def quantize(self, vectors):
        return vectors.argmax(dim=-1)


def test_an_average_of_heads_round_trips_and_means_their_logits(tmp_path):
    """Heads on codes, pooled vectors and encoder frames, saved as one model: loaded back,
    the model's P is the sigmoid of their mean logit, each head hearing its own view of the
    turn's encoder frames (the codes head: them pooled and quantized)."""
    torch.manual_seed(0)
    inputs = ("codes", "pooled", "encoder")
    heads = [EndOfTurnHead(EndOfTurnConfig(inputs=i, code_dim=4, codebook_size=4,
                                           hidden_dim=4)) for i in inputs]
    folder = save_end_of_turn(heads, tmp_path / "eot")
    loaded = load_heads(folder)
    assert [h.config.inputs for h in loaded] == list(inputs)
    model = EndOfTurn(QuantizingTokenizer(), loaded)
    frames = torch.rand(6, 2, 4)  # 6 tokens of 2 encoder frames
    pooled = frames.mean(1)
    views = model.views(frames)
    torch.testing.assert_close(views["encoder"][0], pooled)  # the toy pooler is the mean
    assert torch.equal(views["codes"][0], pooled.argmax(-1))
    with torch.no_grad():
        logits = [heads[0](*pad_and_look_up([pooled.argmax(-1)])),
                  heads[1](*pad_and_look_up([pooled])), heads[2](*pad_and_look_up([pooled]))]
    expected = torch.sigmoid(sum(logits) / 3)
    torch.testing.assert_close(model.probabilities(views), expected, atol=2e-3, rtol=0)
    single = EndOfTurn(QuantizingTokenizer(), heads[2])
    assert set(single.views(frames)) == {"encoder"}  # no pooling where no head needs it
    torch.testing.assert_close(single.probabilities(single.views(frames)),
                               torch.sigmoid(logits[2]))


def pad_and_look_up(rows):
    from voxloop.codecs.end_of_turn import head_inputs

    return head_inputs(rows, torch.eye(4))


def test_a_model_of_another_tokenizer_is_refused(tmp_path):
    head = EndOfTurnHead(EndOfTurnConfig(semantic_sha256="0" * 64))
    save_end_of_turn(head, tmp_path / "eot")
    with pytest.raises(VoxloopError, match="retrain it"):
        load_end_of_turn(tmp_path / "eot")
    with pytest.raises(VoxloopError, match="no end-of-turn model at"):
        load_end_of_turn(tmp_path)
    with pytest.raises(VoxloopError, match="is not an end-of-turn model folder"):
        load_heads(tmp_path)


@pytest.mark.parametrize("inputs", ["codes", "pooled", "encoder"])
def test_the_stream_asks_with_every_row_so_far(inputs):
    """``probability`` at a pause = the probabilities of the whole turn (the stream's encoder
    frames, and a flush's on a snapshot), and the stream goes on unchanged."""
    class Stream:
        def __init__(self):
            self.encoder, self.samples = None, 0

    class Tokenizer(QuantizingTokenizer):
        def init_state(self, batch):
            return Stream()

        def step(self, state, wav, output="tokens"):
            assert output == "frames"
            state.samples += wav.shape[1]
            return torch.eye(4)[torch.full((1, wav.shape[1] // 100, 2), 2)] * 0.5

        def flush(self, state, output="tokens"):
            assert output == "frames"
            return torch.eye(4)[torch.tensor([[[3, 3]]])] * 0.5

    head = EndOfTurnHead(EndOfTurnConfig(inputs=inputs, code_dim=4, codebook_size=4,
                                         hidden_dim=4))
    model = EndOfTurn(Tokenizer(), head)
    state = model.init_state()
    model.push(state, torch.zeros(300))
    p = model.probability(state)
    tokens = torch.tensor([2, 2, 2, 3])
    row = tokens if inputs == "codes" else torch.eye(4)[tokens] * 0.5
    assert p == pytest.approx(float(model.probabilities({inputs: [row]})[0]))
    assert state.semantic.samples == 300 and len(state.rows) == 1


@pytest.mark.parametrize("archs, inputs", [
    (("gru", "gru", "gru"), ("encoder", "codes", "pooled")),
    (("gru", "gru", "gru", "gru"), ("encoder", "codes", "encoder", "encoder")),
    (("gru", "pool"), ("encoder", "codes"))])
def test_the_heads_hear_a_stream_in_pieces_as_the_whole_turn(archs, inputs):
    """Blocks of any size (none too), a pause after each: P from the gru heads' states
    carried along (heads on one input run as one group; a pool head among them: the whole
    turn again) equals P of the whole turn so far, the flushed tail included or empty."""
    torch.manual_seed(0)
    sizes = iter([3, 0, 1, 5, 2, 0, 4])
    tails = iter([1, 0, 2, 0, 3, 1, 0])

    class Tokenizer(QuantizingTokenizer):
        def init_state(self, batch):
            return type("Stream", (), {"encoder": None})()

        def step(self, state, wav, output="tokens"):
            return torch.randn(1, next(sizes), 2, 4)

        def flush(self, state, output="tokens"):
            return torch.randn(1, next(tails), 2, 4)

    heads = [EndOfTurnHead(EndOfTurnConfig(arch=arch, inputs=inputs, code_dim=4,
                                           codebook_size=4, hidden_dim=6))
             for arch, inputs in zip(archs, inputs, strict=True)]
    model = EndOfTurn(Tokenizer(), heads)
    assert model.streams_heads == ("pool" not in archs)
    assert len(model.groups) == (len(set(inputs)) if model.streams_heads else 0)
    state = model.init_state()
    flushed = []
    model.tokenizer.flush = lambda st, output="tokens", flush=model.tokenizer.flush: \
        flushed.append(flush(st, output)) or flushed[-1]
    for _ in range(7):
        model.push(state, torch.zeros(160))
        p = model.probability(state)
        frames = torch.cat([*state.rows, flushed[-1]], dim=1)[0]
        if len(frames):
            assert p == pytest.approx(float(model.probabilities(model.views(frames))[0]),
                                      abs=1e-6)


@pytest.mark.slow
def test_eval_measures_a_model_on_data_of_its_tokenizer_only(tmp_path, capsys):
    """`voxloop eval end-of-turn`: the bundled model on a data folder of its tokenizer gives
    a row per evaluation split; data of another tokenizer, or without the vectors a head
    hears, is a clear error, not numbers."""
    from voxloop.cli import main
    from voxloop.distill.data.turn_eval import evaluate_end_of_turn

    eot = load_end_of_turn("voxloop-end-of-turn")
    write_eval_data(tmp_path, eot, with_encoder=True)
    result = evaluate_end_of_turn("voxloop-end-of-turn", str(tmp_path))
    assert set(result["splits"]) == {"valid", "heldout_voice"}
    assert all(m["examples"] == 40 and 0 <= m["accuracy"] <= 1
               for m in result["splits"].values())
    # data built before the encoder's frames were kept:
    write_eval_data(tmp_path, eot, with_encoder=False)
    with pytest.raises(VoxloopError, match="hold no encoder vectors"):
        evaluate_end_of_turn("voxloop-end-of-turn", str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"semantic_sha256": "0" * 64}))
    assert main(["eval", "end-of-turn", "--data", str(tmp_path),
                 "--out", str(tmp_path / "e.json")]) != 0
    assert "build the data again with --semantic" in capsys.readouterr().err


@pytest.mark.slow  # the synth plan, drawn for every split of two builds and a command
def test_shares_build_disjoint_shards_and_a_share_never_trains(tmp_path, monkeypatch, capsys):
    """`--shard I/N` processes split the shards between them (together: all of them, each
    once), and a process with a share only builds: the others may still be writing."""
    import voxloop.codecs.semantic_tokens as semantic_tokens
    import voxloop.distill.data.turn_build as turn_build
    import voxloop.distill.data.turn_train as turn_train
    from voxloop.cli import main
    from voxloop.distill.data.turn_build import build_turn_data

    built: list[tuple[str, str]] = []
    shares: dict[str, float] = {}

    def fake_build_shard(items, tokenizer, seed, augment_share):
        built.append((items[0].id, items[-1].id))
        shares[items[0].split] = augment_share
        return build_shard(items[:1], FakeTokenizer(), seed, synthesize=fake_synthesize)

    monkeypatch.setattr(semantic_tokens, "load_semantic_model", lambda folder: FakeTokenizer())
    monkeypatch.setattr(turn_build, "build_shard", fake_build_shard)
    settings = TurnDataSettings(data_out=str(tmp_path), train_items=6, eval_items=2,
                                items_per_shard=2)
    build_turn_data(replace(settings, shard="0/2"))
    first = {p.name for p in tmp_path.glob("*.npz")}
    build_turn_data(replace(settings, shard="1/2"))
    every = {p.name for p in tmp_path.glob("*.npz")}
    assert len(first) == 4 and len(every) == 7 == len(built)  # 3 train + 4 eval shards
    assert len(set(built)) == 7  # no shard built twice
    assert shares == {"train": settings.augment_share, "valid": 0.0, "dev_phrasing": 0.0,
                      "heldout_voice": 0.0, "heldout_phrasing": 0.0}  # never augmented
    with pytest.raises(VoxloopError, match="built with --data-seed 0: its shards would mix"):
        build_turn_data(replace(settings, data_seed=1))  # not resumed with other cuts
    # grown: a last shard of fewer items than are planned now is made again, whole
    built.clear()
    build_turn_data(replace(settings, train_items=7))  # a fourth train shard, of one item
    build_turn_data(replace(settings, train_items=8))  # of two
    assert len(built) == 2 and built[0][0] == built[1][0] and built[1][0] != built[1][1]
    # shrunk: the shards of the items no longer planned stay on disk, unread
    build_turn_data(replace(settings, train_items=2))
    with np.load(tmp_path / "train-0000.npz") as first_shard:
        assert len(load_split(tmp_path, "train")["labels"]) == len(first_shard["labels"])

    def no_training(*args, **kwargs):
        raise AssertionError("a share must not train")

    monkeypatch.setattr(turn_train, "train_end_of_turn", no_training)
    assert main(["distill", "end-of-turn", "--data-out", str(tmp_path), "--train-items", "6",
                 "--eval-items", "2", "--items-per-shard", "2", "--shard", "1/2"]) == 0
    assert "run the same command without --shard" in capsys.readouterr().out


def test_no_training_items_builds_the_evaluation_splits_only(tmp_path, monkeypatch, capsys):
    """`--train-items 0` builds the splits models are measured on and trains nothing; a
    folder without training or validation examples is a clear error, not a traceback."""
    import voxloop.codecs.semantic_tokens as semantic_tokens
    import voxloop.distill.data.turn_data as turn_data
    import voxloop.distill.data.turn_train as turn_train
    from voxloop.cli import main
    from voxloop.distill.data.turn_train import TurnTrainSettings, train_end_of_turn
    from voxloop.errors import VoxloopError

    monkeypatch.setattr(semantic_tokens, "load_semantic_model", lambda folder: FakeTokenizer())
    monkeypatch.setattr(turn_data, "build_shard", lambda items, tokenizer, seed, augment_share:
                        build_shard(items[:1], FakeTokenizer(), seed, synthesize=fake_synthesize))
    train = turn_train.train_end_of_turn

    def no_training(*args, **kwargs):
        raise AssertionError("nothing to train")

    monkeypatch.setattr(turn_train, "train_end_of_turn", no_training)
    assert main(["distill", "end-of-turn", "--data-out", str(tmp_path), "--train-items", "0",
                 "--eval-items", "2", "--items-per-shard", "2"]) == 0
    assert "evaluation splits built" in capsys.readouterr().out
    assert main(["distill", "end-of-turn", "--data-out", str(tmp_path), "--train-items", "0",
                 "--eval-items", "2", "--items-per-shard", "2", "--shard", "0/2"]) == 0
    said = capsys.readouterr().out  # a share of an evaluation-only build: nothing to train
    assert "share 0/2 of the evaluation splits built" in said and "--shard to train" not in said
    assert sorted(p.name.split("-0")[0] for p in tmp_path.glob("*.npz")) == \
        ["dev_phrasing", "heldout_phrasing", "heldout_voice", "valid"]
    assert train is train_end_of_turn
    settings = TurnDataSettings(data_out=str(tmp_path), train_items=0, eval_items=2)
    with pytest.raises(VoxloopError, match="no train examples.*--train-items N"):
        train_end_of_turn(settings, TurnTrainSettings(epochs=1, seeds=1))


def test_the_dev_split_says_phrasings_no_plan_has_by_training_voices():
    """``dev_phrasing`` items: the dev phrasings (slots filled), never a phrasing or template
    of the domain, trained or held out, nor said by a held-out voice; a seeded draw."""
    from voxloop.distill.data.turn_data import DEV_SPLIT, pick_items
    from voxloop.distill.teachers.domain.data import ALL_FILLS, examples
    from voxloop.distill.teachers.heldout import HELDOUT_VOICES

    items = pick_items(DEV_SPLIT, 10_000, seed=0)
    domain = {e.text for e in examples(ALL_FILLS, more=1_000, outside=1_000)}
    assert len(items) == len({i.id for i in items}) > 600  # 158 phrasings x 4 voices
    assert not {i.user_voice for i in items} & set(HELDOUT_VOICES)
    assert not {i.prompt_text for i in items} & domain
    assert any(i.slots for i in items) and not any("{" in i.prompt_text for i in items)
    assert [i.id for i in pick_items(DEV_SPLIT, 5, seed=0)] == [i.id for i in items[:5]]
    assert [i.id for i in pick_items(DEV_SPLIT, 5, seed=1)] != [i.id for i in items[:5]]


def test_more_phrasings_widen_the_training_draw_and_keep_held_out_speech_out():
    """``more_phrasings``: training items also ask the domain's more phrasings (templates
    numbered after the others), never the held-out phrasing nor a held-out voice."""
    from voxloop.distill.data.turn_data import pick_items
    from voxloop.distill.teachers.domain.data import load_domain
    from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE, HELDOUT_VOICES

    plain = pick_items("train", 100_000, seed=0)
    more = pick_items("train", 100_000, seed=0, more_phrasings=12)
    first_more = min(len(i["phrasings"]) for i in load_domain()["intents"])
    assert max(i.template for i in plain) < first_more <= max(i.template for i in more)
    assert len(more) > len(plain)
    for items in (plain, more):
        assert HELDOUT_TEMPLATE not in {i.template for i in items}
        assert not {i.user_voice for i in items} & set(HELDOUT_VOICES)


def write_eval_data(folder, eot, with_encoder: bool = True) -> None:
    """Random valid and held-out-voice shards of 40 examples each that ``eot``'s heads can
    hear, and a manifest naming its tokenizer."""
    rng = np.random.default_rng(0)
    widths = {h.config.inputs: h.config.code_dim for h in eot.heads}
    for split in ("valid", "heldout_voice"):
        data = toy_split(40, 3, eot.table)
        tokens = [rng.integers(0, len(eot.table), len(s)) for s in data["sequences"]]
        shard = {"tokens": np.concatenate(tokens).astype(np.int16),
                 "pooled": np.concatenate(data["pooled"]),
                 "offsets": np.cumsum([0] + [len(s) for s in tokens]).astype(np.int64),
                 "labels": data["labels"], "kinds": data["kinds"].astype(np.int8),
                 "texts": ["q"] * 40, "voices": ["v"] * 40}
        if with_encoder:
            shard["encoder"] = rng.standard_normal(
                (len(shard["tokens"]), widths["encoder"])).astype(np.float16)
        write_shard(folder / f"{split}-0000.npz", shard)
    manifest = {"semantic_sha256": eot.heads[0].config.semantic_sha256}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.slow
def test_models_averaged_are_one_model_of_all_their_heads(tmp_path, capsys):
    """`voxloop distill end-of-turn-average`: the bundled model's heads split in two models
    and averaged again give the bundled model's probabilities and measures; the card names
    the command that trained each; one model alone is a clear error."""
    from voxloop.cli import main
    from voxloop.distill.data.turn_eval import evaluate_end_of_turn
    from voxloop.distill.data.turn_train import predict_model

    bundled = load_end_of_turn("voxloop-end-of-turn")
    (tmp_path / "data").mkdir()
    write_eval_data(tmp_path / "data", bundled)
    first, second = tmp_path / "first", tmp_path / "second"
    save_end_of_turn(bundled.heads[:2], first)
    save_end_of_turn(bundled.heads[2:], second)
    made = {"data": asdict(TurnDataSettings(data_out="data/eot-first")),
            "train": asdict(TurnTrainSettings(epochs=3))}
    (first / "metrics.json").write_text(json.dumps(made))
    out = tmp_path / "average"
    assert main(["distill", "end-of-turn-average", str(first), str(second),
                 "--data", str(tmp_path / "data"), "--export", str(out)]) == 0
    assert "averaged model in" in capsys.readouterr().out
    averaged = load_end_of_turn(out)
    assert len(averaged.heads) == len(bundled.heads)
    split = load_split(str(tmp_path / "data"), "valid")
    np.testing.assert_allclose(predict_model(averaged, split), predict_model(bundled, split),
                               atol=1e-6)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["results"]["average"]["splits"] == \
        evaluate_end_of_turn("voxloop-end-of-turn", str(tmp_path / "data"))["splits"]
    card = (out / "README.md").read_text()
    assert "`voxloop distill end-of-turn --data-out data/eot-first" in card
    assert "--epochs 3 " in card
    assert "(no metrics.json: its command is in its card)" in card
    assert main(["distill", "end-of-turn-average", str(first), "--data",
                 str(tmp_path / "data"), "--export", str(out)]) != 0
    assert "at least two" in capsys.readouterr().err

