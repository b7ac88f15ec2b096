"""Two student evaluations of the same held-out turns side by side: the turns each one
gets right that the other misses, and whether that difference is more than chance.

A few points between two students on 483 turns is often noise: fine-tunes of one student
gain and lose 11-18 turns each. The exact McNemar test looks only at the turns where the
two disagree: with ``gained`` turns right only after and ``lost`` only before, it asks how
likely a split at least that lopsided is if either is equally likely to win each one.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from voxloop.errors import VoxloopError

# what is compared: the column of turns.jsonl (voxloop eval student) for each measure
MEASURES = {"out loud": "correct_intended", "words": "text_exact"}
ALL = "all"


@dataclass(frozen=True)
class Comparison:
    split: str
    measure: str
    turns: int
    before_pct: float
    after_pct: float
    gained: int  # right after, wrong before
    lost: int  # right before, wrong after
    p_value: float  # exact two-sided McNemar


def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar p: twice the binomial tail of the smaller count, at 1/2."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def load_turns(folder: str | Path) -> dict[str, dict]:
    """Turn id -> its row of ``FOLDER/turns.jsonl``."""
    path = Path(folder) / "turns.jsonl"
    if not path.is_file():
        raise VoxloopError(f"{path} not found: compare folders written by "
                           f"`voxloop eval student --out FOLDER`")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VoxloopError(f"{path} is not the JSON lines `voxloop eval student` writes: "
                           f"{exc}") from exc
    if not rows:
        raise VoxloopError(f"{path} holds no turns: re-run `voxloop eval student`")
    missing = {c for c in MEASURES.values() for row in rows if c not in row}
    if missing:  # (a turn with no intended answer has no correct_intended)
        raise VoxloopError(f"{path} has turns without {sorted(missing)}: compare runs on "
                           "data that knows every turn's intended answer, or re-run "
                           "`voxloop eval student`")
    return {row["id"]: row for row in rows}


def compare(before: dict[str, dict], after: dict[str, dict]) -> list[Comparison]:
    """Every split, then all turns, for every measure. Both must hold the same turns."""
    if before.keys() != after.keys():
        only = len(before.keys() - after.keys()), len(after.keys() - before.keys())
        raise VoxloopError(f"the evaluations hold different turns ({only[0]} only in the "
                           f"first, {only[1]} only in the second): evaluate both students "
                           f"with the same --data")
    moved = [i for i in before if (before[i].get("prompt_text"), before[i].get("voice")) !=
             (after[i].get("prompt_text"), after[i].get("voice"))]
    if moved:
        raise VoxloopError(f"turn {moved[0]} is another question or voice in each evaluation "
                           f"({len(moved)} such): evaluate both students on the same build "
                           "of the data")
    splits = sorted({row["split"] for row in before.values()}) + [ALL]
    out = []
    for split in splits:
        ids = [i for i, row in before.items() if split in (ALL, row["split"])]
        for measure, column in MEASURES.items():
            was = [bool(before[i][column]) for i in ids]
            now = [bool(after[i][column]) for i in ids]
            gained = sum(n and not w for w, n in zip(was, now, strict=True))
            lost = sum(w and not n for w, n in zip(was, now, strict=True))
            out.append(Comparison(split, measure, len(ids), 100 * sum(was) / len(ids),
                                  100 * sum(now) / len(ids), gained, lost,
                                  mcnemar_p(gained, lost)))
    return out


def format_table(rows: list[Comparison], before: str, after: str) -> str:
    lines = [f"before: {before}", f"after:  {after}", "",
             "| split | measure | turns | before % | after % | gained | lost | McNemar p |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.split} | {r.measure} | {r.turns} | {r.before_pct:.1f} | "
              f"{r.after_pct:.1f} | {r.gained} | {r.lost} | {_p(r.p_value)} |" for r in rows]
    return "\n".join(lines)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def write_comparison(rows: list[Comparison], before: str, after: str, out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"before": before, "after": after,
                                "rows": [asdict(r) for r in rows]}, indent=1))
    return path
