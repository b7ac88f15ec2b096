"""Residual levels: a semantic student hears what its tokenizer's token leaves out, as more
tokens per frame, the same whether streamed, packed or cached, and a student widened to hear
them is the same student where they add nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.distill.student.semantic_fixtures import (
    examples_with_audio,
    noise_speech,
    semantic_packed,
    semantic_student,
    tiny_tokenizer,
)
from voxloop.audio import MODEL_RATE_HZ, from_pcm16
from voxloop.distill.student.layout import text_token_ids, user_frame_ids
from voxloop.distill.student.model import load_student, save_student
from voxloop.distill.student.residual_levels import (
    add_residual_levels,
    fit_residual_levels,
    residual_books,
    rests,
    student_tokenizer,
)
from voxloop.distill.student.user_tokens import (
    as_frames,
    encode_clips,
    load_student_semantic,
    semantic_info,
)
from voxloop.errors import VoxloopError
from voxloop.realtime.engines.ears import SemanticEar


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def books(tokenizer):
    clips = [noise_speech(MODEL_RATE_HZ, seed) for seed in range(40)]
    return fit_residual_levels(tokenizer, clips, levels=3, iters=5)


def test_each_level_quantizes_what_the_ones_before_leave(tokenizer, books):
    heard = tokenizer.with_residual_levels(books)
    wav = torch.from_numpy(np.stack([noise_speech(MODEL_RATE_HZ, s) for s in (50, 51)]))
    pooled = tokenizer.encode(wav, "pooled")  # [B, F, D]
    tokens = heard.encode(wav)
    assert heard.levels == 4 and tokens.shape == (2, 4, pooled.shape[1])
    assert torch.equal(tokens[:, 0], tokenizer.encode(wav))  # level one: the token as before
    first = tokenizer.codebook_vectors()
    left = pooled - first[tokens[:, 0]]
    errors = [left.square().sum()]
    for level, book in enumerate(books, start=1):
        nearest = torch.cdist(left.flatten(0, 1), book).argmin(1).view(tokens[:, level].shape)
        assert torch.equal(tokens[:, level], nearest)
        left = left - book[tokens[:, level]]
        errors.append(left.square().sum())
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.7 * errors[0]
    assert torch.allclose(rests(tokenizer, pooled[0], first), pooled[0] - first[tokens[0, 0]])


@pytest.mark.parametrize("chunk", [160, 3200, 16000])
def test_the_stream_the_ear_and_the_offline_pass_hear_the_same_levels(tokenizer, books, chunk):
    heard = tokenizer.with_residual_levels(books)
    clip = noise_speech(int(1.7 * MODEL_RATE_HZ), 7)
    ear = SemanticEar(heard)
    frames = [ear.push(clip[i:i + chunk]) for i in range(0, len(clip), chunk)] + [ear.flush()]
    streamed = np.concatenate(frames, axis=1)
    assert streamed.shape[0] == 4
    offline = as_frames(encode_clips(heard, [clip])[0])
    np.testing.assert_array_equal(streamed, offline)
    np.testing.assert_array_equal(streamed, as_frames(heard.encode(torch.from_numpy(clip)[None])
                                                      .numpy()))
    assert ear.push(clip[:160]).shape == (4, 0)  # after the end: unheard, still four levels


def test_too_few_frames_to_fit_is_a_clear_error(tokenizer):
    with pytest.raises(VoxloopError, match="too few"):
        fit_residual_levels(tokenizer, [noise_speech(MODEL_RATE_HZ, 0)])


def _widened(tokenizer, books, weight=0.5):
    """A tiny one-level student, its vocabulary, the same student hearing ``books``' levels,
    its vocabulary, and the turns packed for it."""
    examples = examples_with_audio(6)
    data = semantic_packed(tokenizer, examples)
    model = semantic_student(tokenizer, data.vocab)
    wide, vocab = add_residual_levels(model, data.vocab, tokenizer, books, weight)
    return model, data.vocab, wide, vocab, examples


def _answer_logits(model, codes: np.ndarray) -> torch.Tensor:
    """The text head's logits over a turn's user frames ``codes [K, F]`` and two words."""
    ids = np.concatenate([user_frame_ids(model.config, codes[:model.config.k_in]),
                          text_token_ids(model.config, np.array([3, 4]))])
    with torch.no_grad():
        return model(torch.from_numpy(ids)[None], heads=("text",)).text


def test_a_widened_student_is_the_same_student_where_the_levels_add_nothing(tokenizer, books):
    model, vocab, wide, _, examples = _widened(tokenizer, books)
    silent, _ = add_residual_levels(model, vocab, tokenizer, [torch.zeros_like(b) for b in books],
                                    0.5)
    heard = tokenizer.with_residual_levels(books)
    codes = as_frames(encode_clips(heard, [from_pcm16(examples[0].user_audio)])[0])
    one = _answer_logits(model, codes)
    torch.testing.assert_close(_answer_logits(silent, codes), one)  # rows moved, not changed
    assert not torch.allclose(_answer_logits(wide, codes), one)  # ... and the levels reach it


def test_a_widened_student_saves_loads_and_hears_with_its_levels(tmp_path, tokenizer, books):
    _, _, wide, vocab, _ = _widened(tokenizer, books, 0.25)
    folder = save_student(wide, vocab, tmp_path / "wide")
    loaded, loaded_vocab = load_student(folder)
    assert (loaded.config.k_in, loaded.config.residual_weight) == (4, 0.25)
    assert loaded_vocab["semantic"]["residual_levels"]["levels"] == 3
    for mine, saved in zip(books, residual_books(loaded), strict=True):
        torch.testing.assert_close(saved, mine, atol=1e-2, rtol=1e-2)  # float16 on disk
    hears = student_tokenizer(tokenizer, loaded)
    assert hears.levels == 4  # and a pack it makes fits the saved student (float16 books)
    assert semantic_info(hears, None)["residual_levels"] == \
        loaded_vocab["semantic"]["residual_levels"]
    with pytest.raises(VoxloopError, match="residual levels"):
        load_student_semantic(tokenizer, loaded_vocab)  # needs the model that keeps them


def test_packs_of_residual_levels_fit_only_the_student_that_hears_them(tmp_path, tokenizer,
                                                                        books):
    from voxloop.distill.student.train_data import _same_levels, hearing_config

    _, _, wide, vocab, examples = _widened(tokenizer, books)
    packed = semantic_packed(tokenizer.with_residual_levels(books), examples)
    assert packed.user(0).shape[0] == 4
    assert _same_levels(packed.vocab, vocab)
    plain = semantic_packed(tokenizer, examples)
    assert not _same_levels(plain.vocab, vocab)
    with pytest.raises(VoxloopError, match="residual levels and the pack has none"):
        hearing_config(wide.config, plain)


def test_widening_refuses_what_it_cannot_hear(tokenizer, books):
    model, vocab, wide, wide_vocab, _ = _widened(tokenizer, books)
    with pytest.raises(VoxloopError, match="one token per frame"):
        add_residual_levels(wide, wide_vocab, tokenizer, books, 0.5)
    with pytest.raises(VoxloopError, match="1 to 3 residual levels"):
        add_residual_levels(model, vocab, tokenizer, books * 2, 0.5)
    with pytest.raises(VoxloopError, match="above 0"):
        add_residual_levels(model, vocab, tokenizer, books, 0.0)
