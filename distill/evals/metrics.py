"""Text metrics shared by the evaluations: word error rate on normalized text."""

from __future__ import annotations

from voxloop.distill.teachers.domain.text import normalize


def normalize_for_wer(text: str) -> str:
    """Lowercase, no punctuation, numbers as digits: "Seven." and "7" count as equal."""
    return normalize(text)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (total edits / total reference words) after ``normalize_for_wer``."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize_for_wer(r) for r in references]
    hyps = [normalize_for_wer(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        raise ValueError("every reference is empty")
    out = jiwer.process_words([r for r, _ in pairs], [h if h else "<empty>" for _, h in pairs])
    edits = out.substitutions + out.deletions + out.insertions
    return edits / sum(len(r.split()) for r, _ in pairs)
