"""Measure exported end-of-turn models on a data folder's evaluation splits: one model
(``voxloop eval end-of-turn``), or several averaged into one and exported with a card
(``voxloop distill end-of-turn-average``)."""

from __future__ import annotations

import json
from pathlib import Path

from voxloop.distill.data.turn_data import EVAL_SPLITS, load_split
from voxloop.distill.data.turn_train import (
    CARD_MEASURES,
    CARD_TITLE,
    CARD_WAIT_RULE,
    MEASURE_COLUMNS,
    log_loss,
    measure,
    measure_cells,
    predict_model,
    train_command,
)


def evaluate_end_of_turn(model: str, data_out: str) -> dict:
    """An exported model on every evaluation split of a data folder (built with the
    tokenizer the model hears): the measures above per split."""
    from voxloop.codecs.end_of_turn import load_end_of_turn
    from voxloop.models import find_model

    eot = load_end_of_turn(model)
    splits = _evaluation_splits(data_out, eot.heads[0].config, model)
    folder = find_model(model, "end-of-turn model", marker="model.safetensors")
    return {"model": str(folder), "data": str(data_out),
            "heads": [f"{h.config.arch} on {h.config.inputs}" for h in eot.heads],
            "splits": {s: measure(predict_model(eot, d), d["labels"], d["kinds"],
                                   d["one_breath"])
                       for s, d in splits.items()}}


def _evaluation_splits(data_out: str, config, model: str) -> dict:
    """The non-empty evaluation splits of ``data_out``; data built with another tokenizer
    than the one ``model`` (its head ``config``) hears is a clear error."""
    from voxloop.errors import VoxloopError

    manifest = Path(data_out) / "manifest.json"
    if not manifest.is_file():
        raise VoxloopError(f"no end-of-turn data in {data_out} (manifest.json): build it with "
                           "voxloop distill end-of-turn --data-out ... --semantic ...")
    built_with = json.loads(manifest.read_text())["semantic_sha256"]
    # (a head that names no hash is from before heads did: loading accepts it, so here too)
    if config.semantic_sha256 and built_with != config.semantic_sha256:
        raise VoxloopError(
            f"{data_out} holds the tokens of semantic tokenizer {built_with[:12]}, but "
            f"{model} hears {config.semantic} ({config.semantic_sha256[:12]}): "
            f"build the data again with --semantic {config.semantic}")
    splits = {s: load_split(data_out, s) for s in EVAL_SPLITS}
    return {s: d for s, d in splits.items() if len(d["labels"])}


def average_end_of_turn(models: list[str], data_out: str, export: str) -> dict:
    """One model whose heads are every head of ``models`` (exported end-of-turn models
    hearing one tokenizer), their logits averaged; each model and the average measured on
    ``data_out``'s evaluation splits; exported with a card that names the commands that
    trained each. Returns the summary (also ``metrics.json`` beside the weights)."""
    from voxloop.codecs.end_of_turn import EndOfTurn, load_end_of_turn, save_end_of_turn
    from voxloop.codecs.semantic_tokens import find_semantic
    from voxloop.errors import VoxloopError
    from voxloop.models import find_model, weights_sha256

    if len(models) < 2:
        raise VoxloopError("give at least two end-of-turn models to average")
    loaded = [load_end_of_turn(m) for m in models]
    tokenizers = {weights_sha256(find_semantic(eot.heads[0].config.semantic)) for eot in loaded}
    if len(tokenizers) > 1:
        raise VoxloopError(f"{' and '.join(models)} hear different semantic tokenizers "
                           f"({', '.join(sorted(t[:12] for t in tokenizers))}): only models "
                           "of one tokenizer can be averaged")
    heads = [h for eot in loaded for h in eot.heads]
    average = EndOfTurn(loaded[0].tokenizer, heads)
    splits = _evaluation_splits(data_out, heads[0].config, models[0])
    results, sources = {}, []
    for name, eot in [*zip(models, loaded, strict=True), ("average", average)]:
        probs = {s: predict_model(eot, d) for s, d in splits.items()}
        results[name] = {
            "heads": len(eot.heads),
            "parameters": sum(p.numel() for h in eot.heads for p in h.parameters()),
            "valid_loss": log_loss(probs["valid"], splits["valid"]["labels"])
            if "valid" in probs else None,
            "splits": {s: measure(probs[s], d["labels"], d["kinds"], d["one_breath"])
                       for s, d in splits.items()}}
    for name in models:
        folder = find_model(name, "end-of-turn model", marker="model.safetensors")
        metrics = folder / "metrics.json"
        made = json.loads(metrics.read_text()) if metrics.is_file() else {}
        sources.append({"model": name, "command": train_command(made["data"], made["train"])
                        if "data" in made and "train" in made else None})
    summary = {"chosen": "average", "models": sources, "data": str(data_out),
               "export": str(export), "results": results,
               "examples": {s: len(d["labels"]) for s, d in splits.items()}}
    folder = save_end_of_turn(heads, export, average_card(summary))
    (Path(folder) / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def average_card(summary: dict) -> str:
    lines = [
        CARD_TITLE,
        "", f"Exported: the mean logit of the {summary['results']['average']['heads']} heads "
        "of the models below, float16. " + CARD_WAIT_RULE, "",
        "Command: `voxloop distill end-of-turn-average " + " ".join(
            s["model"] for s in summary["models"]) + f" --data {summary['data']} --export "
        f"{summary['export']}`, averaging:", ""]
    lines += [f"- `{s['model']}`: " + (f"`{s['command']}`" if s["command"] else
                                        "(no metrics.json: its command is in its card)")
              for s in summary["models"]]
    lines += ["", f"Measured on `{summary['data']}` ({summary['examples']}; {CARD_MEASURES}):",
              "", f"| model | heads | split | {MEASURE_COLUMNS} |", "|---|---|---|" + "---|" * 6]
    for name, result in summary["results"].items():
        for split, m in result["splits"].items():
            lines.append(f"| {name} | {result['heads']} | {split} | {measure_cells(m)} |")
    lines += ["", "Log loss (dev_phrasing: phrasings no model trained on, the split to choose "
              "by; valid holds trained phrasings only): " + "; ".join(
                  f"{name}: " + ", ".join(f"{split} {m['log_loss']:.4f}"
                                          for split, m in result["splits"].items())
                  for name, result in summary["results"].items()) + "."]
    return "\n".join(lines) + "\n"


def format_evaluation(result: dict) -> str:
    lines = [f"{result['model']} ({', '.join(result['heads'])}) on {result['data']}",
             f"| split | examples | {MEASURE_COLUMNS} |", "|---|---|" + "---|" * 6]
    for split, m in result["splits"].items():
        lines.append(f"| {split} | {m['examples']} | {measure_cells(m)} |")
    return "\n".join(lines)
