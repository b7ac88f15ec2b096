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


def said_pack(student_name: str | Path, pack_path: str | Path, out_path: str | Path,
              batch_size: int = 32, progress: bool = True) -> tuple[Path, int]:
    """Write ``out_path``: the aligned pack ``pack_path`` with every distinct answer as the
    mouth of ``student_name`` says it (codes ``[K_out, F]``, word starts ``[W]``). Returns
    the path and how many distinct answers were said."""
    import torch
    from tqdm import tqdm

    from voxloop.distill.evals.renditions import replace_answers
    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.mouth_train import mouth_pack
    from voxloop.errors import VoxloopError

    model, vocab = load_student(student_name)
    if model.mouth is None:
        raise VoxloopError(f"{student_name} has no mouth: train one with `voxloop distill "
                           "mouth`")
    if batch_size < 1:
        raise VoxloopError("--batch-size must be at least 1")
    data = mouth_pack(pack_path, vocab, student_name)
    k_out, pad = model.config.k_out, model.mouth.config.pad_word
    _, first = np.unique(data.answer_text, return_index=True)
    codes, starts = {}, {}
    for at in tqdm(range(0, len(first), batch_size), desc="said", unit="batch",
                   disable=not progress):
        rows = first[at:at + batch_size]
        texts = [data.text(i) for i in rows]
        words = torch.full((len(rows), max(len(t) for t in texts)), pad, dtype=torch.long)
        for b, t in enumerate(texts):
            words[b, :len(t)] = torch.from_numpy(t)
        lengths = model.mouth.lengths(words)
        for row, t, said, length in zip(rows, texts, model.mouth.say(words), lengths,
                                        strict=True):
            text, length = str(data.answer_text[row]), length[:len(t)]
            codes[text] = said.numpy().astype(np.int16)
            starts[text] = (length.cumsum(0) - length).numpy().astype(np.int16)
    data.arrays["answer_codes"] = data.answer_codes = data.answer_codes[:k_out]
    replace_answers(data, codes, starts)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    data.save(out_path)
    return out_path, len(first)
