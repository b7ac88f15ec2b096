"""``voxloop distill said``: a pack whose answers are what the bundled mouth says."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.distill.student.fixtures import tiny_examples, with_word_frames
from voxloop.cli import main
from voxloop.distill.evals.said import said_pack
from voxloop.distill.student.model import load_student
from voxloop.distill.student.mouth import word_lengths
from voxloop.distill.student.pack import PackedData, pack_examples
from voxloop.distill.student.vocab import Tokenizer
from voxloop.errors import VoxloopError
from voxloop.models import DEFAULT_STUDENT

ANSWERS = ["There are seven days in a week.", "Seven plus five is twelve.",
           "The capital of France is Paris."]


def bundled_pack(aligned: bool = True) -> PackedData:
    """Five turns of three answers (one of them said in train and valid), random takes."""
    _, vocab = load_student(DEFAULT_STUDENT)
    said = [(ANSWERS[0], "train"), (ANSWERS[1], "train"), (ANSWERS[0], "valid"),
            (ANSWERS[2], "heldout_voice"), (ANSWERS[1], "train")]
    examples = [dataclasses.replace(e, answer_text=text, split=split)
                for e, (text, split) in zip(tiny_examples(5), said, strict=True)]
    data = PackedData(pack_examples(examples, Tokenizer(vocab), np.full(1, 3, np.int16)), vocab)
    return with_word_frames(data) if aligned else data


def test_every_answer_is_what_the_mouth_says_at_its_lengths(tmp_path):
    model, _ = load_student(DEFAULT_STUDENT)
    bundled_pack().save(tmp_path / "pack.npz")
    path, n = said_pack(DEFAULT_STUDENT, tmp_path / "pack.npz", tmp_path / "said.npz",
                        progress=False)
    assert n == 3
    data = PackedData.load(path)
    assert data.answer_codes.shape[0] == model.config.k_out
    for i in range(len(data)):
        words = torch.from_numpy(data.text(i))[None]
        said = model.mouth.say(words)[0].numpy()
        np.testing.assert_array_equal(data.answer(i), said)
        lengths = word_lengths(torch.from_numpy(data.words(i)), data.answer(i).shape[1])
        torch.testing.assert_close(lengths, model.mouth.lengths(words)[0])
    # answers said in one batch, padded to the longest, are said as they are alone
    said_pack(DEFAULT_STUDENT, tmp_path / "pack.npz", tmp_path / "one.npz", batch_size=1,
              progress=False)
    one = PackedData.load(tmp_path / "one.npz")
    np.testing.assert_array_equal(one.answer_codes, data.answer_codes)
    np.testing.assert_array_equal(one.word_frames, data.word_frames)


def test_the_cli_writes_it_and_an_unaligned_pack_is_a_clear_error(tmp_path, capsys):
    bundled_pack().save(tmp_path / "pack.npz")
    assert main(["distill", "said", DEFAULT_STUDENT, str(tmp_path / "pack.npz"),
                 str(tmp_path / "said.npz")]) == 0
    assert "3 distinct answers" in capsys.readouterr().out
    bundled_pack(aligned=False).save(tmp_path / "plain.npz")
    with pytest.raises(VoxloopError, match="voxloop distill align"):
        said_pack(DEFAULT_STUDENT, tmp_path / "plain.npz", tmp_path / "x.npz", progress=False)


def test_an_answer_said_another_way_is_copied_at_that_ways_lengths(tmp_path):
    """The bundled table says some answers at another pace (``distill sayings``): the said
    pack holds those codes, with the word lengths of that pace."""
    model, vocab = load_student(DEFAULT_STUDENT)
    table, tokenizer = model.mouth.said_codes, Tokenizer(vocab)
    words, way = next((w, table.way(w)) for w, _ in table.items()
                      if table.way(w).get("pace", 1.0) != 1.0
                      and table.way(w).get("remembered", True))
    text = tokenizer.decode_answer(words)
    examples = [dataclasses.replace(e, answer_text=t, split="train")
                for e, t in zip(tiny_examples(2), [text, ANSWERS[0]], strict=True)]
    data = with_word_frames(PackedData(pack_examples(examples, tokenizer,
                                                     np.full(1, 3, np.int16)), vocab))
    assert data.text(0).tolist() == list(words)
    data.save(tmp_path / "pack.npz")
    said = PackedData.load(said_pack(DEFAULT_STUDENT, tmp_path / "pack.npz",
                                     tmp_path / "said.npz", progress=False)[0])
    np.testing.assert_array_equal(said.answer(0), table.get(torch.tensor(words)).numpy())
    lengths = word_lengths(torch.from_numpy(said.words(0)), said.answer(0).shape[1])
    paced = model.mouth.lengths(torch.tensor([words]), way["pace"])[0]
    torch.testing.assert_close(lengths, paced)
    assert not torch.equal(paced, model.mouth.lengths(torch.tensor([words]))[0])


def test_a_recorded_answer_is_copied_at_the_predicted_lengths_stretched_to_its_take(tmp_path):
    """The bundled table holds the refusal as a take of the assistant's voice, not a saying
    of the mouth: the said pack copies the take, each word at the length the mouth
    predicts for it scaled to the take's frames."""
    from voxloop.distill.evals.said import stretched

    np.testing.assert_array_equal(stretched(torch.tensor([2, 2, 4]), 11), [3, 3, 5])
    for lengths, total in (([1, 1, 30], 10), ([30, 1, 1], 10), ([1, 1, 1, 1], 4),
                           ([10, 2, 1, 1], 7), ([3, 5], 40)):
        out = stretched(torch.tensor(lengths), total)
        assert int(out.sum()) == total and int(out.min()) >= 1, (lengths, total, out)
    with pytest.raises(VoxloopError, match="3 frames cannot hold 4 words"):
        stretched(torch.tensor([1, 1, 1, 1]), 3)
    model, vocab = load_student(DEFAULT_STUDENT)
    tokenizer = Tokenizer(vocab)
    refusal = model.heard_intents.refusal
    examples = [dataclasses.replace(e, answer_text=t, split="train")
                for e, t in zip(tiny_examples(2), [refusal, ANSWERS[0]], strict=True)]
    data = with_word_frames(PackedData(pack_examples(examples, tokenizer,
                                                     np.full(1, 3, np.int16)), vocab))
    data.save(tmp_path / "pack.npz")
    said = PackedData.load(said_pack(DEFAULT_STUDENT, tmp_path / "pack.npz",
                                     tmp_path / "said.npz", progress=False)[0])
    words = tokenizer.encode_answer(refusal)
    take = model.mouth.said_codes.get(torch.tensor(words))
    np.testing.assert_array_equal(said.answer(0), take.numpy())
    lengths = word_lengths(torch.from_numpy(said.words(0)), take.shape[1])
    predicted = model.mouth.lengths(torch.tensor([words]), remembered=False)[0]
    torch.testing.assert_close(lengths, stretched(predicted, take.shape[1]))
