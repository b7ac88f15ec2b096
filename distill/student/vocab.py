"""The student's two small word vocabularies, built from the domain and the training split.

- ``text``: the answer (text2) as lowercase words, the inner monologue the
  student writes before it speaks. Numbers stay spelled out ("one hundred
  eighty seven") because that is what the audio says; punctuation is dropped.
- ``ctc``: what the user said (text1) after the domain's ``normalize`` (numbers
  as digits, contractions expanded), read by the auxiliary CTC head.

Saved with the model as ``vocab.json``: ``{"text": [...], "ctc": [...]}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TEXT_SPECIALS = ("<unk>", "<sep>", "<eot>")
UNK, SEP, EOT = 0, 1, 2
CTC_SPECIALS = ("<blank>", "<unk>")
CTC_BLANK, CTC_UNK = 0, 1

_WORD = re.compile(r"[a-z0-9']+")


def answer_words(text: str) -> list[str]:
    """"Purple is spelled P, U, R!" -> ["purple", "is", "spelled", "p", "u", "r"]."""
    return _WORD.findall(text.lower().replace("’", "'"))


def user_words(text: str) -> list[str]:
    """text1 as the CTC head reads it: the domain's normalization ("what's 7 + five" ->
    ["what", "is", "7", "plus", "5"])."""
    from voxloop.distill.teachers.domain.text import normalize

    return normalize(text).split()


def frame_words(template: str) -> list[str]:
    """A template's own words as the CTC head reads them, its slots left out
    ("what is {a} plus {b}" -> ["what", "is", "plus"])."""
    return user_words(re.sub(r"\{[a-z]+\}", " ", template))


def domain_words() -> tuple[set[str], set[str]]:
    """Words of the domain's fixed answers (text side) and of its phrasings and templates
    (user side), slots left out."""
    from voxloop.distill.teachers.domain.data import load_domain

    domain = load_domain()
    answers = [i["answer"] for i in domain["intents"]] + [domain["fallback"]]
    phrasings = [p for i in domain["intents"] for p in i["phrasings"]]
    text = {w for a in answers for w in answer_words(a)}
    ctc = {w for p in phrasings for w in user_words(p)} \
        | {w for i in domain["compositional"] for t in i["templates"] for w in frame_words(t)}
    return text, ctc


def build_vocab(answers: Iterable[str], transcripts: Iterable[str],
                with_domain: bool = True, keep: dict | None = None) -> dict[str, list[str]]:
    """Vocabularies covering the given text2 answers and text1 transcripts (the training
    split), plus the domain's own words and every word of ``keep`` (a student's
    vocabularies: a pack built this way fine-tunes that student even if it lacks some of
    the answers the student was trained on)."""
    text, ctc = domain_words() if with_domain else (set(), set())
    if keep is not None:
        text |= set(keep["text"]) - set(TEXT_SPECIALS)
        ctc |= set(keep["ctc"]) - set(CTC_SPECIALS)
    text |= {w for a in answers for w in answer_words(a)}
    ctc |= {w for t in transcripts for w in user_words(t)}
    return {"text": [*TEXT_SPECIALS, *sorted(text)], "ctc": [*CTC_SPECIALS, *sorted(ctc)]}


class Tokenizer:
    """Words <-> ids for both vocabularies of a ``vocab.json``."""

    def __init__(self, vocab: dict[str, list[str]]) -> None:
        self.vocab = vocab
        self.text_ids = {w: i for i, w in enumerate(vocab["text"])}
        self.ctc_ids = {w: i for i, w in enumerate(vocab["ctc"])}

    def encode_answer(self, text: str) -> list[int]:
        return [self.text_ids.get(w, UNK) for w in answer_words(text)]

    def encode_transcript(self, text: str) -> list[int]:
        return [self.ctc_ids.get(w, CTC_UNK) for w in user_words(text)]

    def decode_answer(self, ids: Iterable[int]) -> str:
        """Ids -> a readable sentence: "Purple is spelled P U R P L E.", "Cat is spelled C A
        T." (single letters upper case; "a" too where a neighbour is a letter)."""
        words = [self.vocab["text"][i] for i in ids if i >= len(TEXT_SPECIALS)]
        letter = [len(w) == 1 and w.isalpha() for w in words]
        words = [w.upper() if letter[i] and (w != "a" or (i and letter[i - 1])
                                             or (i + 1 < len(words) and letter[i + 1]))
                 else w for i, w in enumerate(words)]
        if not words:
            return ""
        return (words[0][:1].upper() + words[0][1:] + " " + " ".join(words[1:])).strip() + "."

    def decode_ctc(self, frame_ids: Iterable[int]) -> str:
        """Greedy CTC: merge repeats, drop blanks."""
        words, last = [], None
        for i in frame_ids:
            if i != last and i != CTC_BLANK:
                words.append(self.vocab["ctc"][i])
            last = i
        return " ".join(words)
