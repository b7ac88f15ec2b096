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


def test_grown_vocabulary_keeps_what_the_student_says_with_the_old_words():
    from dataclasses import replace

    from tests.distill.student.fixtures import ANSWERS, QUESTIONS
    from voxloop.distill.student.layout import text_token_ids
    from voxloop.distill.student.warm import grow_vocab

    old_vocab = build_vocab(ANSWERS[:2], QUESTIONS[:2], with_domain=False)
    new_vocab = build_vocab(ANSWERS, QUESTIONS, with_domain=False)
    torch.manual_seed(2)
    old = Student(tiny_config(text_vocab=len(old_vocab["text"]), ctc_vocab=len(old_vocab["ctc"]),
                              mouth_d_model=32)).eval()
    old.mouth.set_spelling(old_vocab["text"])
    words = ["the", "capital", "of", "paris", "is", "twelve"]  # all in the old vocabulary
    old_ids = torch.tensor([old_vocab["text"].index(w) for w in words])
    new_ids = torch.tensor([new_vocab["text"].index(w) for w in words])
    old.mouth.remember([old_ids[:2], old_ids[2:]], [[3, 4], [1, 2, 3, 4]])
    new = Student(replace(old.config, text_vocab=len(new_vocab["text"]),
                          ctc_vocab=len(new_vocab["ctc"]))).eval()
    assert grow_vocab(new, new_vocab, old, old_vocab) == \
        len(set(new_vocab["text"]) - set(old_vocab["text"]))

    assert not torch.equal(old_ids, new_ids)  # the rows did move
    # the answers its mouth remembers, in the new ids
    assert [s.shape[1] for s in new.mouth.say(new_ids[:2][None])] == [7]
    assert [s.shape[1] for s in new.mouth.say(new_ids[2:][None])] == [10]
    with torch.no_grad():
        said_old = old(torch.from_numpy(text_token_ids(old.config, old_ids.numpy()))[None])
        said_new = new(torch.from_numpy(text_token_ids(new.config, new_ids.numpy()))[None])
        torch.testing.assert_close(said_new.text[..., new_ids], said_old.text[..., old_ids])
        torch.testing.assert_close(said_new.audio, said_old.audio)
        torch.testing.assert_close(new.mouth.encode(new_ids[None]).log_frames,
                                   old.mouth.encode(old_ids[None]).log_frames)
    purple = new_vocab["text"].index("purple")  # a new word, spelled for the mouth
    assert "".join(chr(c) for c in new.mouth.spelling[purple].tolist() if c) == "purple"

    with pytest.raises(VoxloopError, match="drops words"):
        grow_vocab(old, old_vocab, new, new_vocab)


def test_vocabularies_built_keeping_a_students_words_grow_it():
    """A pack of fewer answers than the student learned (--keep-words-of) still holds every
    word of the student, so --init-from can fine-tune it."""
    from tests.distill.student.fixtures import ANSWERS, QUESTIONS
    from voxloop.distill.student.warm import grows

    student_vocab = build_vocab(ANSWERS, QUESTIONS, with_domain=False)
    fewer = build_vocab(ANSWERS[:1], QUESTIONS[:1], with_domain=False)
    assert not grows(fewer, student_vocab)
    kept = build_vocab(ANSWERS[:1] + ["Purple is spelled P, U, R, P, L, E."], QUESTIONS[:1],
                       with_domain=False, keep=student_vocab)
    assert grows(kept, student_vocab)
    assert "purple" in kept["text"] and kept["text"][:3] == student_vocab["text"][:3]
    assert len(set(kept["ctc"])) == len(kept["ctc"])  # specials once, not twice
