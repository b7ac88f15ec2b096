"""``voxloop eval routing``'s reports: ``routing.md`` (the tables) and ``routing.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxloop.distill.evals.routing import hybrid


def format_routing(result: dict) -> str:
    s = result["settings"]
    refusal = result["refusal_heard_logprob"]
    lines = [f"chosen on {s['choose_on']}: ask the cascade where the student's words score "
             f"below {result['min_words_logprob']:.3f} (at most {s['max_asked_pct']:g} % of its "
             f"turns); take its refusal where Whisper scores at least "
             + (f"{refusal:.3f}" if refusal is not None else "(never)")
             + f" (above {s['refusal_quantile']:g} of its refused turns there)", "",
             "| split | turns | student % | cascade % | hybrid before % | hybrid % | cascade "
             "asked % | cascade answered % | of those, student right / cascade right |",
             "|---|---|---|---|---|---|---|---|---|"]
    for split, v in result["scores"].items():
        lines.append(
            f"| {split} | {v['turns']} | {v['student_pct']:.1f} | {v['cascade_pct']:.1f} | "
            f"{v['hybrid_before_pct']:.1f} | {v['hybrid_pct']:.1f} | {v['asked_pct']:.1f} | "
            f"{v['answered_by_cascade_pct']:.1f} | {v['switched_student_right']} / "
            f"{v['switched_cascade_right']} |")
    loud = {k: v for k, v in result["scores"].items() if "hybrid_out_loud_pct" in v}
    if loud:
        lines += ["", "Out loud (judged by Whisper: the student's answer through the codec, "
                  "the cascade's as its TTS says it):", "",
                  "| split | the student % | hybrid before % | hybrid % |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['student_out_loud_pct']:.1f} | "
                  f"{v['hybrid_before_out_loud_pct']:.1f} | {v['hybrid_out_loud_pct']:.1f} |"
                  for k, v in loud.items()]
    trade = result.get("refusal_trade")
    if trade:
        splits = list(next(iter(trade.values())))
        lines += ["", "The refusal rule's trade (hybrid % right in words, the same student "
                  "threshold):", "", "| cascade's refusals | " + " | ".join(splits) + " |",
                  "|---" * (len(splits) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{v[k]:.1f}" for k in splits) + " |"
                  for label, v in trade.items()]
    return "\n".join(lines)


def plot_routing(rows: list[dict], refusal_above: float | None, unsure_below: float,
                 path: Path) -> None:
    """Hybrid answers right against the share of turns the cascade is asked about, per
    split, the chosen threshold dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split in dict.fromkeys(r["split"] for r in rows):
        mine = [r for r in rows if r["split"] == split]
        grid = [-np.inf, *sorted({r["logprob"] for r in mine}), 0.0]
        points = np.array([[(h := hybrid(mine, t, refusal_above))["asked_pct"], h["right_pct"]]
                           for t in grid])
        line, = ax.plot(points[:, 0], points[:, 1], label=split)
        at = hybrid(mine, unsure_below, refusal_above)
        ax.plot([at["asked_pct"]], [at["right_pct"]], "o", color=line.get_color())
    ax.set_xlabel("turns the cascade is asked about (%)")
    ax.set_ylabel("answered right (%)")
    ax.set_title("hybrid: the cascade asked where the student is unsure "
                 f"(dot: below {unsure_below:.2f})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
