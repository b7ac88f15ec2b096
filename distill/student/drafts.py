"""Drafted answer words: what the student will likely write next, checked in one call.

Greedy decoding writes an answer one model call per word, and at one row a call costs
its fixed overhead, not its arithmetic: seven calls of one position take ~5x as long as
one call of seven (the bundled student, one thread). Most answers are ones the student
learned (the mouth remembers them: ``Mouth.known_words``), so once a row has written
"The capital of france", the rest ("is paris .") is known before the model says it.
:class:`AnswerDrafts` proposes that rest; the stepper feeds the row's pending word and
the draft in one call, reads the text head at every position, and keeps the model's own
choice at each: equal to the draft's word, the next position's output holds too; the
first that differs is the model's next word, and the positions after it are given back.
So a draft changes how many calls an answer takes, never its words (up to the float
rounding of a longer call), and needs greedy decoding (``text_temperature`` 0).

    drafts = AnswerDrafts.from_mouth(model.mouth)
    drafts.draft([369, 62])       # -> [266, ...]: the likeliest known continuation
"""

from __future__ import annotations

from collections import Counter, defaultdict

MAX_DRAFT_WORDS = 8  # longer drafts cost more positions than a wrong guess is worth


class AnswerDrafts:
    """The known answers (word ids each) as a prefix tree: after every prefix, the next
    word that the most known answers go on with."""

    def __init__(self, answers: list[list[int]]) -> None:
        following: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        for words in answers:
            for i, word in enumerate(words):
                following[tuple(words[:i])][word] += 1
        # ties go to the smaller id, so the draft does not depend on the answers' order
        self._next = {prefix: min(counts, key=lambda w: (-counts[w], w))
                      for prefix, counts in following.items()}

    @classmethod
    def from_mouth(cls, mouth) -> AnswerDrafts:
        """The answers ``mouth`` remembers (none for a student without a mouth)."""
        return cls([] if mouth is None else mouth.known_answers())

    def __len__(self) -> int:
        return len(self._next)

    def draft(self, written: list[int], limit: int = MAX_DRAFT_WORDS) -> list[int]:
        """Up to ``limit`` words after ``written``, along the likeliest known answer that
        begins with it; ``[]`` when no known answer does."""
        prefix, out = tuple(written), []
        while len(out) < limit and (word := self._next.get(prefix)) is not None:
            out.append(word)
            prefix += (word,)
        return out
