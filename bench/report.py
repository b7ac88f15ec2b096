"""Summaries of a latency benchmark: a table, ``latency.json`` and ``latency.png``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(records: list[dict]) -> dict:
    """Per engine and session count: p50/p95 latency, engine part, barge-in stop time,
    underruns, the questions whose turn the server ended inside first (``ended_inside``:
    timed from the answer to the whole question) and the turns that failed (a question
    not answered whole: cancelled counts); and the native/cascade p50 ratio."""
    levels: dict = {}
    for engine in dict.fromkeys(r["engine"] for r in records):
        levels[engine] = {}
        for n in sorted({r["sessions"] for r in records if r["engine"] == engine}):
            every = [r for r in records if r["engine"] == engine and r["sessions"] == n]
            rows = [r for r in every if r["kind"] == "question"]  # held-out questions only
            lat = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
            eng = [r["engine_ms"] for r in rows if r["engine_ms"] is not None]
            barge = [r["barge_in_ms"] for r in every if r["barge_in_ms"] is not None]
            levels[engine][n] = {
                "turns": len(rows), "answered": len(lat),
                "latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95),
                "engine_p50_ms": percentile(eng, 50), "engine_p95_ms": percentile(eng, 95),
                "barge_in_p50_ms": percentile(barge, 50), "barge_in_p95_ms": percentile(barge, 95),
                "barge_ins": len(barge), "underruns": sum(r["underruns"] for r in every),
                "ended_inside": sum(bool(r.get("ended_inside")) for r in rows),
                # a question is answered whole; only the barge-in turn's answer is cut
                "failed": sum(r["status"] not in (("completed",) if r["kind"] == "question"
                                                  else ("completed", "cancelled"))
                              for r in every)}
    ratios = {}
    if "native" in levels and "cascade" in levels:
        for n, native in levels["native"].items():
            cascade = levels["cascade"].get(n)
            if cascade and native["latency_p50_ms"] and cascade["latency_p50_ms"]:
                ratios[n] = cascade["latency_p50_ms"] / native["latency_p50_ms"]
    return {"levels": levels, "cascade_over_native_p50": ratios}


def table(summary: dict) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    lines = ["| engine | sessions | turns | latency p50 / p95 ms | engine part p50 / p95 ms | "
             "barge-in stop p50 / p95 ms | underruns | failed |",
             "|---|---|---|---|---|---|---|---|"]
    for engine, levels in summary["levels"].items():
        for n, s in levels.items():
            lines.append(f"| {engine} | {n} | {s['answered']}/{s['turns']} | "
                         f"{ms(s['latency_p50_ms'])} / {ms(s['latency_p95_ms'])} | "
                         f"{ms(s['engine_p50_ms'])} / {ms(s['engine_p95_ms'])} | "
                         f"{ms(s['barge_in_p50_ms'])} / {ms(s['barge_in_p95_ms'])} | "
                         f"{s['underruns']} | {s['failed']} |")
    for n, ratio in summary["cascade_over_native_p50"].items():
        lines.append(f"\ncascade / native latency at p50, {n} session(s): {ratio:.2f}x")
    return "\n".join(lines)


def plot(records: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, scale) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (engine, levels) in enumerate(summary["levels"].items()):
        color = f"C{i}"
        lat = np.sort([r["latency_ms"] for r in records if r["engine"] == engine
                       and r["kind"] == "question" and r["latency_ms"] is not None])
        if len(lat):
            cdf.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", label=engine,
                     color=color)
        ns = list(levels)
        for key, style in (("latency_p50_ms", "-o"), ("latency_p95_ms", "--x")):
            scale.plot(ns, [levels[n][key] or np.nan for n in ns], style, color=color,
                       label=f"{engine} {key.split('_')[1]}")
    cdf.set(xlabel="voice-to-voice latency (ms), all session counts", ylabel="fraction of turns",
            title="Latency CDF per engine")
    scale.set(xlabel="concurrent sessions", ylabel="latency (ms)", xscale="log", yscale="log",
              title="p50 / p95 against sessions")
    scale.set_xticks([n for levels in summary["levels"].values() for n in levels])
    scale.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    scale.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in (cdf, scale):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(records: list[dict], settings: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(records)
    (out / "latency.json").write_text(json.dumps(
        {"settings": settings, "summary": summary, "turns": records}, indent=1) + "\n")
    plot(records, summary, out / "latency.png")
    return summary
