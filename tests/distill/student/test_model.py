"""The student's shapes, streaming equivalence, batch isolation and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_config, tiny_examples, tiny_packed
from voxloop.distill.student.layout import IGNORE, delay, undelay
from voxloop.distill.student.model import (
    AUDIO_SPECIAL,
    KVCache,
    Student,
    load_student,
    save_student,
)
from voxloop.distill.student.pack import make_batch


def _model(seed: int = 0, **changes) -> Student:
    torch.manual_seed(seed)
    data = tiny_packed(tiny_examples())
    config = tiny_config(text_vocab=len(data.vocab["text"]), ctc_vocab=len(data.vocab["ctc"]),
                         **changes)
    return Student(config).eval(), data


def test_shapes_and_targets():
    model, data = _model()
    batch = make_batch(model.config, data, np.arange(4), None, np.random.default_rng(0))
    out = model(batch.ids)
    b, t, k_in = batch.ids.shape
    assert k_in == 8 and b == 4
    assert out.text.shape == (b, t, model.config.text_vocab)
    assert out.audio.shape == (b, t, 4, 1025)
    assert out.ctc.shape == (b, t, model.config.ctc_vocab)
    # one EOS target per turn on codebook 0, and answer frames * 4 code targets
    frames = [data.answer(i).shape[1] for i in range(4)]
    eos = (batch.audio_target[..., 0] == AUDIO_SPECIAL).sum(1)
    assert eos.tolist() == [1, 1, 1, 1]
    codes = ((batch.audio_target != IGNORE) & (batch.audio_target != AUDIO_SPECIAL)).sum((1, 2))
    assert codes.tolist() == [4 * f for f in frames]
    assert ((batch.text_target != IGNORE).sum(1) == torch.tensor(
        [len(data.text(i)) + 1 for i in range(4)])).all()


def test_delay_roundtrip():
    codes = np.arange(4 * 6).reshape(4, 6)
    steps, valid = delay(codes, 4)
    assert steps.shape == (9, 4) and valid.sum() == 4 * 6 + 1
    assert steps[0, 1] == AUDIO_SPECIAL and steps[3, 3] == codes[3, 0]
    assert np.array_equal(undelay(steps, 4), codes)


def _full_and_chunked(model, ids: torch.Tensor, chunks: list[int]):
    full = model(ids[None])
    cache = KVCache.empty(model.config, 1, 100)
    pieces, start = [], 0
    for n in chunks:
        pieces.append(model(ids[None, start:start + n], cache))
        start += n
    assert int(cache.lengths[0]) == start == len(ids)
    return full, pieces


def test_chunked_prefill_and_steps_equal_full_pass():
    model, data = _model()
    ids = make_batch(model.config, data, np.array([1]), None, np.random.default_rng(0)).ids[0]
    rng = np.random.default_rng(1)
    n_user = data.user(1).shape[1]
    chunks = []
    while sum(chunks) < n_user:  # random prefill chunks, then one position per step
        chunks.append(min(int(rng.integers(1, 5)), n_user - sum(chunks)))
    chunks += [1] * (len(ids) - n_user)
    with torch.no_grad():
        full, pieces = _full_and_chunked(model, ids, chunks)
    for head in ("text", "audio", "ctc"):
        streamed = torch.cat([getattr(p, head) for p in pieces], dim=1)
        assert torch.allclose(streamed, getattr(full, head), atol=1e-4), head
        assert getattr(full, head).abs().max() > 0.01


def test_batched_rows_of_different_lengths_are_isolated():
    model, data = _model()
    batch = make_batch(model.config, data, np.array([0, 2]), None, np.random.default_rng(0))
    lengths = [int((batch.ids[i, :, 0] != model.config.null_id).sum()) for i in range(2)]
    alone = []
    with torch.no_grad():
        for i in range(2):
            alone.append(model(batch.ids[i:i + 1, :lengths[i]]).audio[0])
        cache = KVCache.empty(model.config, 2, 100)
        done, got = [0, 0], [[], []]
        rng = np.random.default_rng(3)
        while done != lengths:
            n = [min(int(rng.integers(0, 4)), lengths[i] - done[i]) for i in range(2)]
            width = max(max(n), 1)
            ids = torch.full((2, width, 8), model.config.null_id)
            for i in range(2):
                ids[i, :n[i]] = batch.ids[i, done[i]:done[i] + n[i]]
            out = model(ids, cache, torch.tensor(n))
            for i in range(2):
                got[i].append(out.audio[i, :n[i]])
                done[i] += n[i]
        assert cache.lengths.tolist() == lengths
    for i in range(2):
        assert torch.allclose(torch.cat(got[i]), alone[i], atol=1e-4)
    assert lengths[0] != lengths[1]


def test_a_row_filled_to_its_capacity_batches_with_a_longer_one():
    """Row 0 fills its cache's last positions in a call whose width row 1 sets: the
    padding past row 0's end neither refuses the call nor overwrites what it holds."""
    model, data = _model()
    ids = make_batch(model.config, data, np.array([0, 1]), None, np.random.default_rng(0)).ids
    capacity = 12
    with torch.no_grad():
        alone = KVCache.empty(model.config, 1, capacity)
        want = model(ids[:1, :capacity], alone).audio[0, -2:]
        cache = KVCache.empty(model.config, 2, capacity)
        model(ids[:, :capacity - 2], cache)
        width = 8  # row 1's new positions; row 0 has room for 2
        step = torch.full((2, width, ids.shape[2]), model.config.null_id)
        step[0, :2] = ids[0, capacity - 2:capacity]
        step[1] = ids[1, 0:width]  # any ids: row 1 is not checked
        cache.lengths[1] = 0
        got = model(step, cache, torch.tensor([2, width])).audio[0, :2]
        with pytest.raises(ValueError, match="longer than 12 positions"):
            model(step, cache, torch.tensor([1, width]))  # row 0 is full: no more room
    assert torch.allclose(got, want, atol=1e-4)
    assert cache.lengths.tolist() == [capacity, width]
    assert all(torch.allclose(a[0, :capacity], b[0, :capacity], atol=1e-5)
               for a, b in zip(cache.keys, alone.keys, strict=True))


def test_some_rows_of_a_cache_are_written_in_its_own_storage():
    """``cache.rows``: a call over some sessions (continuous batching) writes their rows of
    the batch's cache, and only theirs."""
    model, data = _model()
    cache = KVCache.empty(model.config, 2, 50)
    ids = make_batch(model.config, data, np.array([0, 1]), None, np.random.default_rng(0)).ids
    with torch.no_grad():
        model(ids[1:, :6], cache.rows([1]), torch.tensor([6]))
        alone = KVCache.empty(model.config, 1, 50)
        model(ids[1:, :6], alone, torch.tensor([6]))
    assert cache.lengths.tolist() == [0, 6]
    assert not cache.keys[0][0].any()
    assert all(torch.equal(a[1], b[0]) for a, b in zip(cache.keys, alone.keys, strict=True))


def test_save_load_roundtrip(tmp_path):
    model, data = _model()
    folder = save_student(model, data.vocab, tmp_path / "student", card="# card\n")
    loaded, vocab = load_student(folder)
    assert vocab == data.vocab and (folder / "README.md").read_text() == "# card\n"
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a.half().float(), b), name
    ids = make_batch(model.config, data, np.array([0]), None, np.random.default_rng(0)).ids
    with torch.no_grad():
        assert torch.allclose(model(ids).audio, loaded(ids).audio, atol=2e-2)


@pytest.mark.slow
def test_bundled_student_loads_and_streams_the_same_in_chunks():
    from pathlib import Path

    from voxloop.distill.student.generate import SamplingOptions
    from voxloop.distill.student.one_turn import generate
    from voxloop.distill.student.vocab import Tokenizer

    folder = Path(__file__).resolve().parents[3] / "models" / "voxloop-student"
    assert (folder / "model.safetensors").stat().st_size <= 40e6
    model, vocab = load_student(folder)
    assert vocab["codec"]["name"] == "voxloop-codec-16k" and "README.md" in {
        p.name for p in folder.iterdir()}
    user = np.random.default_rng(0).integers(0, model.config.user_vocab, (model.config.k_in, 30))
    options = SamplingOptions(max_audio_frames=40)
    whole = generate(model, Tokenizer(vocab), user, options)
    chunked = generate(model, Tokenizer(vocab), user, options, chunk_frames=7)
    assert whole.text_ids == chunked.text_ids and whole.text
    assert np.array_equal(whole.codes, chunked.codes) and whole.codes.shape[1] > 0


def test_user_frames_can_enter_as_the_codec_latent(tmp_path):
    """With ``user_latent_dim`` the user codes are read through the codec's codebooks
    (a saved buffer); streaming still equals the full pass."""
    from voxloop.codecs.config import CodecConfig
    from voxloop.codecs.registry import random_codec

    model, data = _model(user_latent_dim=128)
    codec = random_codec(CodecConfig())
    ids = make_batch(model.config, data, np.array([1]), None, np.random.default_rng(0)).ids[0]
    with torch.no_grad():
        before = model(ids[None]).text
        model.set_user_codebooks(codec)
        after = model(ids[None]).text
        assert not torch.allclose(before, after)  # the codebooks are what the user side reads
        embeds = [layer._codebook.embed for layer in codec.quantizer.vq.layers]
        assert torch.equal(model.user_codebooks[1024 * 3 + 7], embeds[3][7])
        model.embed.weight[:model.config.text_offset].normal_()  # learned user rows: unused
        assert torch.allclose(model(ids[None]).text, after)
        n_user = data.user(1).shape[1]
        full, pieces = _full_and_chunked(model, ids, [3, n_user - 3] + [1] * (len(ids) - n_user))
    streamed = torch.cat([p.audio for p in pieces], dim=1)
    assert torch.allclose(streamed, full.audio, atol=1e-4)
    loaded, _ = load_student(save_student(model, data.vocab, tmp_path / "student"))
    assert torch.equal(loaded.user_codebooks, model.user_codebooks.half().float())
