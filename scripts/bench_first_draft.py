"""How many model calls a student takes to write its answer's words, with and without its
heard-intents head (whose likeliest fixed answer is the first call's draft; without it the
first call drafts the likeliest known answer's start), on a pack's held-out turns, one
session, one thread: the calls per answer, the time to the settled words, and how many
answers differ (the head's overrides; a draft alone never changes words).

The turn's last 3 frames are heard in the first text call, as the native engine hears a
turn's tail (``end_turn(heard_last=...)``).

Usage: python scripts/bench_first_draft.py [--student voxloop-student]
           [--data out/heard-rvq.npz] [--out out/bench-first-draft.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.model import load_student
from voxloop.distill.student.residual_levels import residual_books
from voxloop.distill.student.rows import Phase
from voxloop.distill.student.train_data import load_data
from voxloop.distill.student.vocab import Tokenizer

SPLITS = ("heldout_voice", "heldout_phrasing")
TAIL_FRAMES = 3


def words_of(stepper: StudentStepper, codes: np.ndarray) -> tuple[int, float, tuple[int, ...]]:
    """(model calls, seconds from the end of the turn, word ids) for one turn."""
    state = stepper.start(1)
    stepper.advance(state, [codes[:, :-TAIL_FRAMES]])
    stepper.end_turn(state, heard_last=[codes[:, -TAIL_FRAMES:]])
    calls, t0 = 0, time.perf_counter()
    while state.rows[0].phase is Phase.TEXT:
        stepper.step(state)
        calls += 1
    return calls, time.perf_counter() - t0, tuple(state.rows[0].turn.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="voxloop-student")
    parser.add_argument("--data", default="out/heard-rvq.npz", help="a pack with held-out turns")
    parser.add_argument("--out", default="out/bench-first-draft.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, vocab = load_student(args.student)
    if model.heard_intents is None:
        raise SystemExit(f"error: {args.student} has no heard-intents head: fit one with "
                         f"`voxloop distill heard-intents {args.student}`")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = load_data(args.data, out.parent, vocab, splits=SPLITS,
                     residual_books=residual_books(model))
    turns = np.concatenate([data.indices(split) for split in SPLITS])
    head, results, words = model.heard_intents, {}, {}
    for name, with_head in (("without the head", None), ("with the head", head)):
        model.heard_intents = with_head
        stepper = StudentStepper(model, Tokenizer(vocab), SamplingOptions())
        runs = [words_of(stepper, data.user(i)) for i in turns]
        calls, secs = np.array([r[0] for r in runs]), np.array([r[1] for r in runs])
        words[name] = [r[2] for r in runs]
        results[name] = {"calls_mean": float(calls.mean()),
                         "one_call": int((calls == 1).sum()),
                         "words_ms_p50": float(np.percentile(secs, 50) * 1000),
                         "words_ms_p95": float(np.percentile(secs, 95) * 1000)}
        print(f"{name}: {calls.mean():.2f} calls per answer ({(calls == 1).sum()} of "
              f"{len(turns)} in one), words settled p50 / p95 "
              f"{results[name]['words_ms_p50']:.1f} / {results[name]['words_ms_p95']:.1f} ms")
    differ = sum(a != b for a, b in zip(*words.values(), strict=True))
    print(f"{differ} of {len(turns)} answers differ (the head's overrides)")
    out.write_text(json.dumps({"student": args.student, "turns": len(turns),
                               "differ": differ, **results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
