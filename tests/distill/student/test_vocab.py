"""Answer words back to the sentence a user reads."""

from __future__ import annotations

import pytest

from voxloop.distill.student.vocab import TEXT_SPECIALS, Tokenizer, answer_words


@pytest.mark.parametrize(("answer", "read"), [
    ("Purple is spelled P, U, R, P, L, E.", "Purple is spelled P U R P L E."),
    ("Cat is spelled C, A, T.", "Cat is spelled C A T."),  # the letter A, not the word a
    ("Pizza is spelled P, I, Z, Z, A.", "Pizza is spelled P I Z Z A."),
    ("A cow says moo.", "A cow says moo."),
    ("A square has four equal sides.", "A square has four equal sides."),
])
def test_spelled_letters_read_upper_case_and_the_word_a_does_not(answer, read):
    words = sorted(set(answer_words(answer)))
    tokenizer = Tokenizer({"text": [*TEXT_SPECIALS, *words], "ctc": []})
    assert tokenizer.decode_answer(tokenizer.encode_answer(answer)) == read
