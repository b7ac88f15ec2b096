"""An ``eval student`` run judged again by today's judge, from the transcripts it saved.

The judge (``distill.evals.judge``) decides whether what Whisper heard in an answer
is the answer; when it changes (stricter about numbers, signs, spelled letters, negations
and the word that carries the answer), a run's out-loud verdicts move with it, though no
model or audio did. This reads ``BEFORE``'s ``metrics.json`` and ``turns.jsonl``, judges
every turn's transcript again, writes the run as ``eval student`` would into ``AFTER``
(metrics, turns, report, plot) and prints the correct % per split, before and after;
``voxloop eval compare BEFORE AFTER`` then lists the turns that changed.

Usage: python scripts/rejudge_eval.py BEFORE AFTER
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from voxloop.distill.evals.compare import load_turns
from voxloop.distill.evals.student import judged_again, write_judged
from voxloop.errors import VoxloopError
from voxloop.paths import output_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", help="a `voxloop eval student --out` folder")
    parser.add_argument("after", help="the folder to write the run judged again into")
    args = parser.parse_args()
    out = output_folder(args.after, "AFTER")
    metrics_path = Path(args.before) / "metrics.json"
    if not metrics_path.is_file():
        raise SystemExit(f"{metrics_path} not found: give a `voxloop eval student --out` folder")
    try:
        before = list(load_turns(args.before).values())
    except VoxloopError as exc:
        raise SystemExit(str(exc)) from None
    metrics, after = judged_again(json.loads(metrics_path.read_text()), before)
    out.mkdir(parents=True, exist_ok=True)
    write_judged(metrics, after, out)
    key = "correct_intended" if all("correct_intended" in r for r in before) else "correct"
    for split in [*dict.fromkeys(r["split"] for r in before), "all"]:
        old = sum(r[key] for r in before if split in ("all", r["split"]))
        new = sum(r[key] for r in after if split in ("all", r["split"]))
        n = sum(split in ("all", r["split"]) for r in before)
        print(f"{split:>18}: {key} {old} -> {new} of {n} "
              f"({100 * old / n:.1f} -> {100 * new / n:.1f} %)")
    print(f"wrote {out}/metrics.json, turns.jsonl, report.md and student-eval.png")


if __name__ == "__main__":
    main()
