"""Warm start: a semantic student begins from a codec-hearing one's blocks, audio and words."""

from __future__ import annotations

import pytest
import torch

from tests.distill.student.fixtures import tiny_config
from tests.distill.student.semantic_fixtures import CODEC, semantic_student, tiny_tokenizer
from voxloop.distill.student.model import Student
from voxloop.distill.student.vocab import build_vocab
from voxloop.distill.student.warm import warm_start
from voxloop.errors import VoxloopError


def vocab_of(answers: list[str], questions: list[str]) -> dict:
    return {**build_vocab(answers, questions, with_domain=False), "codec": CODEC}


def test_warm_start_copies_what_carries_over_by_word():
    old_vocab = vocab_of(["Seven plus five is twelve."], ["what is seven plus five"])
    new_vocab = vocab_of(["Paris is the capital.", "Seven plus five is twelve."],
                         ["where is paris", "what is seven plus five"])
    torch.manual_seed(1)
    old = Student(tiny_config(text_vocab=len(old_vocab["text"]),
                              ctc_vocab=len(old_vocab["ctc"]), k_in=8))
    new = semantic_student(tiny_tokenizer(), new_vocab)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    counts = warm_start(new, new_vocab, old, old_vocab)

    got, was = new.state_dict(), old.state_dict()
    assert torch.equal(got["blocks.1.attn.q.weight"], was["blocks.1.attn.q.weight"])
    assert torch.equal(got["audio_head.weight"], was["audio_head.weight"])
    assert torch.equal(got["embed.weight"][new.config.audio_offset:],
                       was["embed.weight"][old.config.audio_offset:])
    assert torch.equal(got["user_proj.weight"], fresh["user_proj.weight"])  # hears anew
    for word in ("twelve", "paris"):  # one both vocabularies hold, one only the new
        i = new_vocab["text"].index(word)
        row = got["embed.weight"][new.config.text_offset + i]
        if word in old_vocab["text"]:
            j = old_vocab["text"].index(word)
            assert torch.equal(row, was["embed.weight"][old.config.text_offset + j])
            assert torch.equal(got["text_head.weight"][i], was["text_head.weight"][j])
        else:
            assert torch.equal(row, fresh["embed.weight"][new.config.text_offset + i])
    k, j = new_vocab["ctc"].index("plus"), old_vocab["ctc"].index("plus")
    assert torch.equal(got["ctc_head.weight"][k], was["ctc_head.weight"][j])
    assert counts["text_words"] == len(set(old_vocab["text"]) & set(new_vocab["text"]))

    wider = Student(tiny_config(d_model=96, n_heads=4, text_vocab=len(old_vocab["text"]),
                                ctc_vocab=len(old_vocab["ctc"])))
    with pytest.raises(VoxloopError, match="same width"):
        warm_start(new, new_vocab, wider, old_vocab)
    with pytest.raises(VoxloopError, match="same codec"):
        warm_start(new, {**new_vocab, "codec": {"sha256": "other"}}, old, old_vocab)
