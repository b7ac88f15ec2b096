"""How often a student's words are all right, teacher-forced, by kind of answer and split.

A cheap look at the ears and words (no generation, no mouth, no judge): every turn of the
valid and held-out splits of a pack goes through the student once with its intended answer
fed in, and a turn counts as right when every answer word is the model's top choice. Kinds:
``fixed`` (one answer per intent) and each compositional intent (arithmetic, conversions,
capitals, spelling, next day). Use it to compare students that hear through different
tokenizers, each on the pack made with its own tokenizer (the same turns).

Usage: python scripts/words_by_kind.py STUDENT PACK.npz [--out out/words-by-kind.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.evals.student import composed_intents
from voxloop.distill.student.layout import IGNORE, build_sequence
from voxloop.distill.student.model import load_student
from voxloop.distill.student.pack import PackedData
from voxloop.distill.student.vocab import Tokenizer

SPLITS = ("valid", "heldout_voice", "heldout_phrasing")


@torch.no_grad()
def words_by_kind(student: str, pack: str) -> dict[str, dict[str, list[int]]]:
    """split -> kind -> [turns all right, turns]; kind ``all`` sums the others."""
    model, vocab = load_student(student)
    tokenizer, data = Tokenizer(vocab), PackedData.load(pack)
    composed = sorted(composed_intents())  # the domain's compositional intents
    counts: Counter = Counter()
    for split in SPLITS:
        for i in data.indices(split):
            kind = str(data.intent[i]) if str(data.intent[i]) in composed else "fixed"
            text = np.asarray(tokenizer.encode_answer(str(data.intended_text[i])))
            seq = build_sequence(model.config, data.user(i), text, data.answer(i),
                                 data.ctc(i), words_only=True)
            logits = model(torch.as_tensor(seq.ids)[None], heads=("text",)).text[0]
            said = seq.text_target != IGNORE
            right = bool((logits.argmax(-1).numpy()[said] == seq.text_target[said]).all())
            for key in (kind, "all"):
                counts[(split, key, "right")] += right
                counts[(split, key, "turns")] += 1
    return {split: {kind: [counts[(split, kind, "right")], counts[(split, kind, "turns")]]
                    for kind in ("all", "fixed", *composed) if counts[(split, kind, "turns")]}
            for split in SPLITS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student", help="student folder or bundled name")
    parser.add_argument("pack", help="pack made with the student's tokenizer")
    parser.add_argument("--out", default="out/words-by-kind.json")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = words_by_kind(args.student, args.pack)
    for split, kinds in table.items():
        print(split, " ".join(f"{k} {r}/{n} ({100 * r / n:.1f} %)"
                              for k, (r, n) in kinds.items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"student": args.student, "pack": args.pack,
                                          "right_of_turns": table}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
