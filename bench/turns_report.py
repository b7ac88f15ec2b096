"""The turn-detection bench's report: per-setting summary, markdown table, and the plot of
latency against false cut-ins (one point per setting and paused style)."""

from __future__ import annotations

from voxloop.bench.report import percentile


def format_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _cut_ins(paused: list[dict]) -> dict:
    cuts = sum(r["cut_in"] for r in paused)
    return {"paused": len(paused), "cut_ins": cuts,
            "cut_in_rate": cuts / len(paused) if paused else None}


def summarize(records: list[dict]) -> dict:
    """Per setting: latency and decided p50 / p95 on complete questions, how many of them
    the server ended inside first (``complete_cut_ins``), false cut-in rate
    on every paused question and (``by_style``) on each style's, and how many turn ends of
    a question came late, during the next one (``late_turn_ends``: skipped there)."""
    out = {}
    for setting in dict.fromkeys(r["setting"] for r in records):
        mine = [r for r in records if r["setting"] == setting]
        lat = [r["latency_ms"] for r in mine if r["kind"] == "complete" and r["latency_ms"]
               is not None]
        dec = [r["decided_ms"] for r in mine if r["kind"] == "complete" and r["decided_ms"]
               is not None]
        paused = [r for r in mine if r["kind"] == "paused" and r["cut_in"] is not None]
        complete_cuts = sum(bool(r["cut_in"]) for r in mine if r["kind"] == "complete")
        styles = dict.fromkeys(r.get("style") or "apart" for r in paused)
        out[setting] = {
            "complete": sum(r["kind"] == "complete" for r in mine), "answered": len(lat),
            "complete_cut_ins": complete_cuts,
            "late_turn_ends": sum(r.get("late_turn_ends", 0) for r in mine),
            "paused_timeouts": sum(r["kind"] == "paused" and r["cut_in"] is None
                                   for r in mine),  # never ended: not in the cut-in rate
            "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
            "decided_p50_ms": percentile(dec, 50), "decided_p95_ms": percentile(dec, 95),
            **_cut_ins(paused),
            "by_style": {style: _cut_ins([r for r in paused if (r.get("style") or "apart")
                                          == style]) for style in styles}}
    return out


def table(summary: dict) -> str:
    styles = list(dict.fromkeys(style for s in summary.values() for style in s["by_style"]))
    lines = ["| turn detection | complete answered | complete, ended inside first | "
             "voice-to-voice p50 / p95 ms | turn end after speech p50 / p95 ms (audio time) |"
             + "".join(f" false cut-ins, paused {style.replace('_', ' ')} |"
                       for style in styles),
             "|---|---|---|---|---|" + "---|" * len(styles)]
    for setting, s in summary.items():
        cuts = []
        for style in styles:
            c = s["by_style"].get(style, _cut_ins([]))
            rate = "-" if c["cut_in_rate"] is None else f"{100 * c['cut_in_rate']:.0f} %"
            cuts.append(f"{c['cut_ins']}/{c['paused']} ({rate})")
        lines.append(f"| {setting} | {s['answered']}/{s['complete']} | "
                     f"{s['complete_cut_ins']}/{s['complete']} | "
                     f"{format_ms(s['latency_p50_ms'])} / {format_ms(s['latency_p95_ms'])} | "
                     f"{format_ms(s['decided_p50_ms'])} / {format_ms(s['decided_p95_ms'])} |"
                     + "".join(f" {cut} |" for cut in cuts))
    return "\n".join(lines)


def plot(summary: dict, path) -> None:
    """Latency p50 (o) and p95 (x) against the false cut-in rate, one point per setting;
    one panel per paused style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = list(dict.fromkeys(style for s in summary.values() for style in s["by_style"]))
    fig, axes = plt.subplots(1, max(1, len(styles)), figsize=(7 * max(1, len(styles)), 5),
                             sharey=True, squeeze=False)
    for ax, style in zip(axes[0], styles or ["apart"], strict=False):
        for i, (setting, s) in enumerate(summary.items()):
            rate = s["by_style"].get(style, {}).get("cut_in_rate")
            if s["latency_p50_ms"] is None or rate is None:
                continue
            color = f"C{i}"
            x, p50 = 100 * rate, s["latency_p50_ms"]
            p95 = s["latency_p95_ms"] or p50
            ax.plot([x, x], [p50, p95], "-", color=color, alpha=0.4)
            ax.plot([x], [p50], "o", color=color,
                    label=f"{setting}: p50 {p50:.0f}, p95 {p95:.0f} ms")
            ax.plot([x], [p95], "x", color=color)
        ax.set(xlabel=f"false cut-ins on paused questions, {style.replace('_', ' ')} (%)",
               yscale="log", title=f"Paused {style.replace('_', ' ')}")
        ax.set_xlim(-5, 105)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper center")
    axes[0][0].set_ylabel("voice-to-voice latency on complete questions (ms): o p50, x p95")
    fig.suptitle("Turn detection: latency against cutting people off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
