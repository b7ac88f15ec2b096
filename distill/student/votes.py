"""Votes over alignments: one turn heard through the ear's frames started a fraction of a
frame apart, and the wording most of the answers wrote.

The tokens of an unseen voice depend on where the token grid falls on the speech; the
student's words on a few alignments err differently more often than they err alike, so
the majority is right more often than any one of them (the student's card measures it).
Shared by the native engine (``--native-votes``) and ``voxloop eval votes``. No torch here.
"""

from __future__ import annotations

from collections import Counter


def skips(frame_samples: int, votes: int) -> list[int]:
    """Samples each ear skips at the start of the turn: ``i / votes`` of a frame."""
    if votes < 1:
        raise ValueError(f"votes must be at least 1, not {votes}")
    return [i * frame_samples // votes for i in range(votes)]


def winner(wordings: list[str], spoke: list[bool]) -> int:
    """The index of the wording most of the answers that spoke wrote (a tie: the earliest,
    i.e. the unshifted ear's); 0 when none spoke."""
    voters = [i for i, said in enumerate(spoke) if said]
    votes = Counter(wordings[i] for i in voters)
    return next((i for i in voters if votes[wordings[i]] == max(votes.values())), 0)
