"""A student that hears semantic tokens: config, layout, augmentation, offline tokens as
the stream makes them, packing a (partial) dataset, training, save and load."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_config
from tests.distill.student.semantic_fixtures import (
    examples_with_audio,
    noise_speech,
    semantic_packed,
    semantic_student,
    tiny_tokenizer,
    write_dataset,
)
from voxloop.codecs.semantic import SemanticTokenizer
from voxloop.distill.student.augment import Augment, augment_user, nearest_codes
from voxloop.distill.student.config import StudentConfig
from voxloop.distill.student.generate import SamplingOptions
from voxloop.distill.student.layout import build_sequence
from voxloop.distill.student.model import load_student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.pack import PackedData, dataset_progress, make_batch, pack_dataset
from voxloop.distill.student.train import StudentTrainSettings, export_student, train
from voxloop.distill.student.user_tokens import bundled_name, encode_clips
from voxloop.distill.student.vocab import Tokenizer
from voxloop.errors import VoxloopError
from voxloop.models import sha256_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer() -> SemanticTokenizer:
    return tiny_tokenizer()


def stream_tokens(tokenizer: SemanticTokenizer, wav: np.ndarray, rng) -> np.ndarray:
    state, out, start = tokenizer.init_state(1), [], 0
    while start < len(wav):
        size = int(rng.integers(1, 6000))
        out.append(tokenizer.step(state, torch.from_numpy(wav[start:start + size])[None]))
        start += size
    return torch.cat([*out, tokenizer.flush(state)], dim=1)[0].numpy()


def test_config_kinds_and_the_bundled_config_still_reads():
    bundled = StudentConfig(k_in=4, k_out=4, user_latent_dim=128)  # config.json before
    assert bundled.user_input == "latent" and bundled.text_offset == 4 * 1024  # user_input
    semantic = StudentConfig(user_input="semantic", user_vocab=500, user_latent_dim=256)
    assert semantic.k_in == 1 and semantic.channels == semantic.k_out == 4
    assert semantic.text_offset == 500
    assert dataclasses.replace(semantic, k_in=8).k_in == 1
    with pytest.raises(ValueError, match="user_input"):
        StudentConfig(user_input="words")
    with pytest.raises(ValueError, match="latent"):
        StudentConfig(user_input="latent")


def test_layout_puts_one_token_per_user_frame_and_answers_on_k_out_channels():
    config = StudentConfig(user_input="semantic", user_vocab=64, user_latent_dim=8,
                           text_vocab=10, ctc_vocab=5)
    tokens = np.array([[3, 63, 0, 7]])
    answer = np.random.default_rng(0).integers(0, 1024, (8, 5))
    seq = build_sequence(config, tokens, np.array([4, 5]), answer, np.array([2]))
    assert seq.ids.shape == (4 + 4 + 5 + 3 - 1, 4) and seq.n_user == 4
    assert seq.ids[:4, 0].tolist() == [3, 63, 0, 7]
    assert (seq.ids[:4, 1:] == config.null_id).all()
    assert seq.ids[4, 0] == config.text_offset + 1  # <sep>
    assert seq.ids[7, 0] == config.text_offset + 2  # <eot>
    assert (seq.ids[8:, :4] >= config.audio_offset).all()


def test_augment_one_codebook_pads_with_the_silence_token_at_the_user_rate():
    rng = np.random.default_rng(0)
    tokens = np.full((1, 40), 9)
    aug = Augment(lead_pad_frames=8, lead_crop_frames=0, tail_pad_frames=12,
                  codebook_dropout=1.0, frame_dropout=0.0, code_noise=0.5)
    for _ in range(20):
        out = augment_user(tokens, np.array([5]), aug, rng, vocab=64)
        assert out.shape[0] == 1 and 40 <= out.shape[1] <= 60
        assert out.min() >= 0 and out.max() < 64  # noise within the tokenizer's codes
    slow = aug.at_rate(12.5)
    assert (slow.lead_pad_frames, slow.tail_pad_frames) == (4, 6)
    quiet = Augment(8, 0, 12, 0.0, 0.0, 0.0)
    out = augment_user(tokens, np.array([5]), quiet.at_rate(12.5), rng, vocab=64)
    assert set(out[0].tolist()) <= {5, 9} and out.shape[1] <= 40 + 4 + 6


def test_span_mask_blanks_one_stretch_of_at_most_a_third_and_only_when_asked():
    tokens = np.arange(1, 61)[None]
    still = dict(lead_pad_frames=0, lead_crop_frames=0, tail_pad_frames=0,
                 codebook_dropout=0.0, frame_dropout=0.0, code_noise=0.0)
    lengths = set()
    for seed in range(50):
        out = augment_user(tokens, np.array([0]), Augment(**still, span_mask=1.0),
                           np.random.default_rng(seed), vocab=64)
        blank = np.flatnonzero(out[0] == -1)
        assert 1 <= len(blank) <= 20 and np.all(np.diff(blank) == 1)  # one stretch
        assert np.array_equal(out[0][out[0] != -1], np.setdiff1d(tokens[0], blank + 1))
        lengths.add(len(blank))
    assert len(lengths) > 5  # stretches of many lengths
    for seed in range(20):  # off by default
        out = augment_user(tokens, np.array([0]), Augment(**still), np.random.default_rng(seed))
        assert np.array_equal(out, tokens)


def test_neighbour_noise_swaps_tokens_for_their_nearest_codes_only():
    """Codes on a line: each one's nearest are the codes beside it, so a swapped token
    moves by at most the table's width; about the asked share moves, none when off."""
    vectors = np.arange(64, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    near = nearest_codes(vectors, 2)
    assert near[10].tolist() in ([9, 11], [11, 9]) and near[0].tolist() == [1, 2]
    still = dict(lead_pad_frames=0, lead_crop_frames=0, tail_pad_frames=0,
                 codebook_dropout=0.0, frame_dropout=0.0, code_noise=0.0)
    tokens = np.tile(np.arange(2, 62), 50)[None]
    out = augment_user(tokens, np.array([0]), Augment(**still, neighbour_noise=0.3,
                                                      neighbours=near),
                       np.random.default_rng(0), vocab=64)
    moved = out != tokens
    assert 0.25 < moved.mean() < 0.35
    assert np.abs(out - tokens).max() <= 2 and (out[moved] != tokens[moved]).all()
    off = augment_user(tokens, np.array([0]), Augment(**still, neighbours=near),
                       np.random.default_rng(0), vocab=64)
    assert np.array_equal(off, tokens)


@pytest.mark.parametrize("rate", [25.0, 12.5])
def test_offline_batched_tokens_are_the_streams(rate):
    """Clips of many lengths (under a window, a block, across blocks) in one padded pass
    give the tokens the stream gives them in random chunks."""
    tokenizer = tiny_tokenizer(rate)
    rng = np.random.default_rng(1)
    lengths = [0, 150, 400, 3200, 3361, 8000, 12345, 16000, 40000]
    clips = [noise_speech(n, seed) for seed, n in enumerate(lengths)]
    offline = encode_clips(tokenizer, clips)
    for clip, tokens in zip(clips, offline, strict=True):
        np.testing.assert_array_equal(tokens, stream_tokens(tokenizer, clip, rng))
    assert sum(len(t) for t in offline) > 50 and len(set(np.concatenate(offline))) >= 3


def test_pack_a_partial_dataset_as_semantic_tokens(tmp_path, tokenizer):
    train_examples = examples_with_audio(4, seed=0)
    valid_examples = examples_with_audio(2, seed=5, split="valid")
    (tmp_path / "data" / "shards").mkdir(parents=True)
    write_dataset(tmp_path / "data", {"train": train_examples, "valid": valid_examples},
                  {"train": 5, "valid": 1})
    progress = dataset_progress(tmp_path / "data")
    assert progress.startswith("still being built") and "train 2/5 shards (4 turns)" in progress
    out = pack_dataset(tmp_path / "data", tmp_path / "sem.npz", user_input="semantic",
                       semantic=tokenizer, batch_size=3)
    data = PackedData.load(out)
    assert data.user_input == "semantic" and len(data) == 6
    assert data.vocab["semantic"]["frame_rate_hz"] == 25.0
    assert data.silence_codes.tolist() == [data.vocab["semantic"]["silence"]]
    assert data.user_codebooks.shape == (64, 8)
    for i, ex in enumerate(train_examples + valid_examples):
        wav = torch.from_numpy(ex.user_audio.astype(np.float32) / 32768)[None]
        np.testing.assert_array_equal(data.user(i), tokenizer.encode(wav).numpy())
    # an evaluation's splits alone, with the model's vocabularies: the same rows
    valid = PackedData.load(pack_dataset(tmp_path / "data", tmp_path / "valid.npz",
                                         user_input="semantic", semantic=tokenizer,
                                         vocab=data.vocab, splits=("valid",)))
    assert valid.split.tolist() == ["valid", "valid"]
    for i, j in enumerate(data.indices("valid")):
        np.testing.assert_array_equal(valid.user(i), data.user(j))
    with pytest.raises(VoxloopError, match="vocabularies of the model"):
        pack_dataset(tmp_path / "data", tmp_path / "x.npz", user_input="semantic",
                     semantic=tokenizer, splits=("valid",))
    with pytest.raises(VoxloopError, match="corpus"):
        pack_dataset(tmp_path / "data", tmp_path / "x.npz", targets="intended",
                     corpus=tmp_path, user_input="semantic", semantic=tokenizer)
    bare = [dataclasses.replace(e, user_audio=None) for e in train_examples[:2]]
    (tmp_path / "bare" / "shards").mkdir(parents=True)
    write_dataset(tmp_path / "bare", {"train": bare}, {"train": 1})
    with pytest.raises(VoxloopError, match="audio"):
        pack_dataset(tmp_path / "bare", tmp_path / "x.npz", user_input="semantic",
                     semantic=tokenizer)


def test_tiny_semantic_student_trains_saves_and_loads(tmp_path, tokenizer):
    data = semantic_packed(tokenizer, examples_with_audio(4))
    settings = StudentTrainSettings(data="unused.npz", out=str(tmp_path / "run"), steps=4,
                                    batch_size=4, lr=3e-3, warmup_steps=1, eval_every=2,
                                    ckpt_every=2, threads=1, device="cpu")
    out = train(settings, tiny_config(), data=data)  # the config follows the data
    model, vocab = load_student(export_student(out / "best.pt", tmp_path / "student"))
    config = model.config
    assert (config.user_input, config.k_in, config.user_vocab, config.user_latent_dim) == \
        ("semantic", 1, 64, 8)
    assert json.loads((tmp_path / "student" / "config.json").read_text())["user_input"] == \
        "semantic"
    assert vocab["semantic"] == data.vocab["semantic"] and vocab["user_input"] == "semantic"
    torch.testing.assert_close(model.user_codebooks, tokenizer.codebook_vectors(),
                               atol=2e-3, rtol=2e-3)  # float16 on disk
    batch = make_batch(config, data, np.arange(4), Augment(), np.random.default_rng(0))
    assert batch.ids.shape[2] == config.channels == 4
    options = SamplingOptions(max_text_tokens=4, max_audio_frames=6)
    result = generate(model, Tokenizer(vocab), data.user(0), options, chunk_frames=3)
    assert result.codes.shape[0] == 4
    with pytest.raises(VoxloopError, match="latent"):
        train(dataclasses.replace(settings, out=str(tmp_path / "b")),
              tiny_config(user_latent_dim=128), data=data)


def test_a_semantic_student_refuses_codec_data(tmp_path, tokenizer):
    from tests.distill.student.fixtures import tiny_examples, tiny_packed

    settings = StudentTrainSettings(data="unused.npz", out=str(tmp_path / "run"), steps=1,
                                    threads=1, device="cpu")
    with pytest.raises(VoxloopError, match="semantic data"):
        train(settings, tiny_config(user_input="semantic"), data=tiny_packed(tiny_examples(2)))


def test_generate_prefills_semantic_tokens_in_chunks_as_at_once(tokenizer):
    data = semantic_packed(tokenizer, examples_with_audio(2))
    model = semantic_student(tokenizer, data.vocab)
    options = SamplingOptions(max_text_tokens=4, max_audio_frames=8)
    whole = generate(model, Tokenizer(data.vocab), data.user(1), options)
    chunked = generate(model, Tokenizer(data.vocab), data.user(1), options, chunk_frames=2)
    assert whole.text_ids == chunked.text_ids
    np.testing.assert_array_equal(whole.codes, chunked.codes)


def test_pack_adds_the_train_turns_of_extra_datasets_only(tmp_path, tokenizer):
    main = examples_with_audio(4, seed=0)
    main_valid = examples_with_audio(2, seed=5, split="valid")
    more = [dataclasses.replace(e, id=f"{e.id}-s1") for e in examples_with_audio(2, seed=9)]
    more_valid = [dataclasses.replace(e, id=f"{e.id}-s1")
                  for e in examples_with_audio(2, seed=11, split="valid")]
    for name, existing in (("main", {"train": main, "valid": main_valid}),
                           ("more", {"train": more, "valid": more_valid}),
                           ("same", {"train": main[:2]})):
        (tmp_path / name / "shards").mkdir(parents=True)
        write_dataset(tmp_path / name, existing, {s: len(e) // 2 for s, e in existing.items()})
    out = pack_dataset(tmp_path / "main", tmp_path / "sem.npz", user_input="semantic",
                       semantic=tokenizer, batch_size=3, extra_train=(tmp_path / "more",))
    data = PackedData.load(out)
    assert sorted(data.id[data.indices("train")].tolist()) == sorted(
        [e.id for e in main + more])
    assert data.id[data.indices("valid")].tolist() == [e.id for e in main_valid]
    for ex in more:
        i = int(np.flatnonzero(data.id == ex.id)[0])
        wav = torch.from_numpy(ex.user_audio.astype(np.float32) / 32768)[None]
        np.testing.assert_array_equal(data.user(i), tokenizer.encode(wav).numpy())
    with pytest.raises(VoxloopError, match="--seed"):
        pack_dataset(tmp_path / "main", tmp_path / "x.npz", user_input="semantic",
                     semantic=tokenizer, extra_train=(tmp_path / "same",))


def test_new_ears_fine_tunes_a_student_onto_another_tokenizer(tmp_path, tokenizer):
    """A pack heard through a retrained tokenizer (same size, other weights) is refused by
    --init-from unless --new-ears: then the student hears through the new codebook and its
    vocabularies name the new tokenizer; its words and everything else carry over."""
    data = semantic_packed(tokenizer, examples_with_audio(4))
    data.vocab["semantic"] = {**data.vocab["semantic"], "sha256": "a" * 64}
    settings = StudentTrainSettings(data="unused.npz", out=str(tmp_path / "run"), steps=2,
                                    batch_size=4, lr=3e-3, warmup_steps=1, eval_every=2,
                                    ckpt_every=2, threads=1, device="cpu")
    first = export_student(train(settings, tiny_config(), data=data) / "best.pt",
                           tmp_path / "student")
    other = tiny_tokenizer(seed=1)
    heard = semantic_packed(other, examples_with_audio(4))
    heard.vocab["semantic"] = {**heard.vocab["semantic"], "sha256": "b" * 64}
    tune = dataclasses.replace(settings, init_from=str(first), lr=0.0, steps=1)
    with pytest.raises(VoxloopError, match="--new-ears"):
        train(dataclasses.replace(tune, out=str(tmp_path / "refused")), data=heard)
    out = train(dataclasses.replace(tune, out=str(tmp_path / "tuned"), new_ears=True),
                data=heard)
    model, vocab = load_student(export_student(out / "best.pt", tmp_path / "tuned-student"))
    old, _ = load_student(first)
    assert vocab["semantic"]["sha256"] == "b" * 64
    assert not torch.allclose(model.user_codebooks, old.user_codebooks)
    torch.testing.assert_close(model.user_codebooks, other.codebook_vectors(),
                               atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(model.text_head.weight, old.text_head.weight)  # lr 0


def test_a_saved_student_names_its_tokenizer_by_its_bundled_name(tmp_path, tokenizer,
                                                                 monkeypatch):
    """Trained on tokens of a tokenizer in runs/, saved after that tokenizer was copied
    into models/: the student's vocab names the bundled copy, so it finds its ears on
    another machine; a tokenizer with no bundled copy keeps its path."""
    bundled = tmp_path / "models" / "my-ears"
    bundled.mkdir(parents=True)
    (bundled / "model.safetensors").write_bytes(b"the retrained tokenizer's weights")
    monkeypatch.setenv("VOXLOOP_MODELS", str(tmp_path / "models"))
    data = semantic_packed(tokenizer, examples_with_audio(4))
    data.vocab["semantic"] = {**data.vocab["semantic"], "name": str(tmp_path / "runs" / "ears"),
                              "sha256": sha256_of(bundled / "model.safetensors")}
    settings = StudentTrainSettings(data="unused.npz", out=str(tmp_path / "run"), steps=1,
                                    batch_size=4, lr=3e-3, warmup_steps=1, eval_every=1,
                                    ckpt_every=1, threads=1, device="cpu")
    _, vocab = load_student(export_student(train(settings, tiny_config(), data=data) /
                                           "best.pt", tmp_path / "student"))
    assert vocab["semantic"] == {**data.vocab["semantic"], "name": "my-ears"}
    elsewhere = {**data.vocab, "semantic": {**data.vocab["semantic"], "sha256": "c" * 64}}
    assert bundled_name(elsewhere) == elsewhere
