"""An aligned pack whose answers are what a student's mouth says now: ``voxloop distill said``.

A mouth fine-tuned on a few better takes (``voxloop distill renditions``) learns every other
answer of its pack too, and a rebuilt dataset's takes of those answers are not the ones it
learned (piper draws its noise anew on every synthesis): it unlearns how it says them. In
the said pack every answer is the mouth's own saying, its first ``K_out`` codebooks at the
word lengths it says them with. ``renditions --misheard-only`` on it then re-takes only the
answers the mouth says badly, and a mouth fine-tuned on it learns those new takes while
everything else it is taught is what it says already.

    voxloop distill said voxloop-student runs/student/aligned.npz runs/student/said.npz
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def said_with_lengths(mouth, words) -> tuple[list, list]:
    """What ``mouth`` says for each row of ``words [B, W]`` (codes ``[K, F_b]``) and the
    frames per word ``[W_b]`` (padding dropped) it says them at: a remembered answer as its
    table holds it, at the lengths of the way it was said (``voxloop distill sayings`` may
    have chosen another pace or the predicted lengths; a recorded take: the predicted
    lengths stretched to it), any other answer greedy."""
    from voxloop.distill.student.said_codes import RECORDED

    table, pad = mouth.said_codes, mouth.config.pad_word
    codes, lengths = [], []
    for row in words:
        ids = row[row != pad]
        said = table.get(ids) if table is not None else None
        way = {} if said is None else table.way(ids)
        codes.append(mouth.say(ids[None])[0] if said is None else said)
        if RECORDED in way:  # a take: the lengths the mouth predicts, stretched to its frames
            lengths.append(stretched(mouth.lengths(ids[None], remembered=False)[0],
                                     said.shape[1]))
            continue
        lengths.append(mouth.lengths(ids[None], way.get("pace", 1.0),
                                     remembered=way.get("remembered", True))[0])
    return codes, lengths


def stretched(lengths, total: int):
    """Frames per word ``[W]`` scaled to sum to ``total``, each word at least one frame (a
    take shorter than one frame a word is refused)."""
    import torch

    from voxloop.errors import VoxloopError

    words = len(lengths)
    if total < words:
        raise VoxloopError(f"a take of {total} frames cannot hold {words} words")
    spare = total - words  # shared out as the lengths share their sum
    ends = torch.round(torch.cumsum(lengths.double(), 0) * spare / max(1, int(lengths.sum())))
    return torch.diff(ends.long(), prepend=torch.zeros(1, dtype=torch.long)) + 1


def said_pack(student_name: str | Path, pack_path: str | Path, out_path: str | Path,
              batch_size: int = 32, progress: bool = True) -> tuple[Path, int]:
    """Write ``out_path``: the aligned pack ``pack_path`` with every distinct answer as the
    mouth of ``student_name`` says it (codes ``[K_out, F]``, word starts ``[W]``). Returns
    the path and how many distinct answers were said."""
    from tqdm import tqdm

    from voxloop.distill.evals.renditions import replace_answers
    from voxloop.distill.student.mouth_train import answer_batch, student_and_pack
    from voxloop.errors import VoxloopError

    if batch_size < 1:
        raise VoxloopError("--batch-size must be at least 1")
    model, _, data = student_and_pack(student_name, pack_path)
    mouth = model.mouth
    _, first = np.unique(data.answer_text, return_index=True)
    codes, starts = {}, {}
    for at in tqdm(range(0, len(first), batch_size), desc="said", unit="batch",
                   disable=not progress):
        rows = first[at:at + batch_size]
        words, _, _ = answer_batch(data, rows, mouth.config)  # padded with pad_word
        for row, said, length in zip(rows, *said_with_lengths(mouth, words), strict=True):
            text, length = str(data.answer_text[row]), length[:len(data.text(row))]
            codes[text] = said.numpy().astype(np.int16)
            starts[text] = (length.cumsum(0) - length).numpy().astype(np.int16)
    data.arrays["answer_codes"] = data.answer_codes = data.answer_codes[:model.config.k_out]
    replace_answers(data, codes, starts)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data.save(out_path)
    return out_path, len(first)
