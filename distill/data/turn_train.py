"""Train the end-of-turn head on ``turn_data``'s examples; measure it; export it with a card.

Every ``arch`` on every kind of ``inputs`` asked for (the tokens' codebook vectors, the
pooled vectors before the VQ, or the mean encoder frames each token pools) is trained the
same way (AdamW, BCE, batches of ``batch_size`` examples, ``token_noise`` of the frames
replaced by random codebook vectors, or for ``encoder`` by random frames of the batch, the
epoch with the best validation loss kept), ``seeds`` times with other seeds, and
measured on every split; exported: the average of every head trained (``--ensemble``, the
default) or the one with the lowest validation loss. Measured per split:

- ``accuracy``: P(finished) >= 0.5 against the label;
- ``false_cutoff``: unfinished examples (a question cut at a word, or a filler after the
  cut) whose wait at medium eagerness (``wait_ms``) is shorter than ``PAUSE_PROBE_MS``:
  a user pausing that long there would be cut off;
- ``fast``: finished examples whose wait at medium eagerness is at most ``FAST_MS``;
- ``wait_p50_ms``: the median wait at medium eagerness on finished examples;
- ``auc``: how often a finished example gets a higher P than an unfinished one (ties
  count half): the ranking, whatever the wait made of it;
- ``fast_at_5pct_cutoff``: finished examples above the P that 5 % of the unfinished
  ones exceed (how many answer at once where a wait rule let 5 % through).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from voxloop.distill.data.turn_data import (
    EVAL_SPLITS,
    KINDS,
    ONE_BREATH_SHARE,
    TurnDataSettings,
    load_split,
)

PAUSE_PROBE_MS = 1000
FAST_MS = 100
DEFAULT_EXPORT = "runs/end-of-turn"  # never the bundled model: bundling is a choice
CARD_TITLE = "# voxloop-end-of-turn: P(the user has finished) from the semantic tokenizer's hearing"
CARD_WAIT_RULE = ("`semantic_vad` asks it at every pause; the wait before the turn ends is cap x "
                  "(1 - P)^2 (caps 8 / 4 / 2 s for low / medium / high eagerness).")
CARD_MEASURES = (f"false cut-off: an unfinished example whose medium-eagerness wait is under "
                 f"{PAUSE_PROBE_MS} ms; fast: a finished one answered after at most {FAST_MS} "
                 "ms of silence")


@dataclass(frozen=True)
class TurnTrainSettings:
    archs: tuple[str, ...] = field(default=("gru",), metadata={
        "help": "heads to train and compare: gru and/or pool (mean and last vectors)"})
    inputs: tuple[str, ...] = field(default=("codes", "pooled"), metadata={
        "help": "what the heads hear: codes (the tokens' codebook vectors), pooled (the "
                "vectors before the VQ) and/or encoder (the mean of the Whisper encoder "
                "frames each token pools)"})
    hidden_dim: int = field(default=64, metadata={"help": "head width"})
    epochs: int = field(default=12, metadata={"help": "passes over the training examples"})
    batch_size: int = field(default=64, metadata={"help": "examples per step"})
    lr: float = field(default=3e-3, metadata={"help": "AdamW learning rate"})
    token_noise: float = field(default=0.1, metadata={
        "help": "share of training frames replaced by random codebook vectors (encoder: "
                "random frames of the batch; the head overfits a few thousand examples "
                "within 5 epochs without it)"})
    train_seed: int = field(default=0, metadata={"help": "initialization and batch order"})
    seeds: int = field(default=2, metadata={
        "help": "heads per arch and inputs (seeds train_seed, train_seed + 1, ...)"})
    ensemble: bool = field(default=True, metadata={
        "help": "export the average of every head trained (else the best on valid)"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads"})
    export: str = field(default=DEFAULT_EXPORT, metadata={
        "help": "where the chosen model is written (models/voxloop-end-of-turn replaces "
                "the bundled one)"})


def measure(probs: np.ndarray, labels: np.ndarray, kinds: np.ndarray,
            one_breath: np.ndarray | None = None) -> dict:
    """Accuracy, ranking and medium-eagerness waits of ``probs [N]``; ``accuracy_by_kind``
    also tells one-breath examples (cut out of the whole question) from the others when
    ``one_breath [N]`` says which they are."""
    from voxloop.codecs.end_of_turn import wait_ms

    waits = np.array([wait_ms(float(p), "medium") for p in probs])
    done, cut = labels == 1, labels == 0
    names = np.array([KINDS[k] for k in kinds.tolist()], dtype=object)
    if one_breath is not None:
        names = np.where(one_breath, names + ", one breath", names)
    by_kind = {name: float(np.mean((probs[names == name] >= 0.5) == labels[names == name]))
               for name in sorted(set(names.tolist()))}
    both = done.any() and cut.any()
    return {"examples": len(labels),
            "accuracy": float(np.mean((probs >= 0.5) == (labels == 1))),
            "log_loss": log_loss(probs, labels),
            "auc": auc(probs, labels) if both else None,
            "fast_at_5pct_cutoff": float(np.mean(probs[done] > np.quantile(probs[cut], 0.95)))
            if both else None,
            "false_cutoff": float(np.mean(waits[cut] < PAUSE_PROBE_MS)) if cut.any() else None,
            "fast": float(np.mean(waits[done] <= FAST_MS)) if done.any() else None,
            "wait_p50_ms": float(np.median(waits[done])) if done.any() else None,
            "accuracy_by_kind": by_kind}


def split_rows(split: dict, inputs: str) -> list:
    """The rows a head on ``inputs`` hears: token rows ``[F]`` or vector rows ``[F, D]``."""
    import torch

    from voxloop.errors import VoxloopError

    if inputs == "codes":
        return [torch.from_numpy(s) for s in split["sequences"]]
    if split[inputs] is None:
        raise VoxloopError(f"these end-of-turn shards hold no {inputs} vectors (built before "
                           "they were kept): build them again in a new --data-out, or train "
                           "with --inputs codes")
    return [torch.from_numpy(p) for p in split[inputs]]


def add_noise(vectors, lengths, table, share: float, from_batch: bool) -> None:
    """Replace ``share`` of the frames of ``vectors [B, F, D]`` in place: by random rows of
    ``table [N, D]``, or (``from_batch``) by random real frames of the batch."""
    import torch

    noisy = torch.rand(vectors.shape[:2]) < share
    count = int(noisy.sum())
    if not count:
        return
    if from_batch:
        real = torch.arange(vectors.shape[1])[None] < lengths[:, None]  # [B, F]
        donors = vectors[real]
        vectors[noisy] = donors[torch.randint(0, donors.shape[0], (count,))]
    else:
        vectors[noisy] = table[torch.randint(0, table.shape[0], (count,))]


def auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """P(a finished example's P > an unfinished one's), ties half: the Mann-Whitney U."""
    from scipy.stats import rankdata

    ranks = rankdata(probs)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_head(config, table, train: dict, valid: dict, settings: TurnTrainSettings,
               progress=print):
    """One head trained on ``train``; returns (head, best validation loss)."""
    import copy

    import torch

    from voxloop.codecs.end_of_turn import EndOfTurnHead, head_inputs

    torch.manual_seed(settings.train_seed)
    head = EndOfTurnHead(config)
    opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.01)
    rows = split_rows(train, config.inputs)
    labels = torch.from_numpy(train["labels"].astype(np.float32))
    rng = np.random.default_rng(settings.train_seed)
    best, best_state = float("inf"), None
    for epoch in range(settings.epochs):
        head.train()
        order = rng.permutation(len(rows))
        loss_sum = 0.0  # the epoch's mean training loss, for the progress line
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            vectors, lengths = head_inputs([rows[i] for i in batch], table)
            add_noise(vectors, lengths, table, settings.token_noise,
                      from_batch=config.inputs == "encoder")
            logits = head(vectors, lengths)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(batch)
        val = validation_loss(head, table, valid)
        if val < best:
            best, best_state = val, copy.deepcopy(head.state_dict())
        if epoch % 5 == 4 or epoch == settings.epochs - 1:
            progress(f"{config.arch} on {config.inputs} epoch {epoch + 1}: train loss "
                     f"{loss_sum / len(order):.3f}, "
                     f"valid loss {val:.3f}")
    head.load_state_dict(best_state)
    return head.eval(), best


def predict(head, table, split: dict) -> np.ndarray:
    """P(finished) ``[N]`` of one head on a split."""
    import torch

    from voxloop.codecs.end_of_turn import head_inputs

    head.eval()
    rows = split_rows(split, head.config.inputs)
    return _in_batches(lambda lo, hi: torch.sigmoid(head(*head_inputs(rows[lo:hi], table))),
                       len(rows))


def predict_model(eot, split: dict) -> np.ndarray:
    """P(finished) ``[N]`` of an ``EndOfTurn`` (one head or the average of several)."""
    views = {inputs: split_rows(split, inputs) for inputs in eot.inputs}
    return _in_batches(lambda lo, hi: eot.probabilities({k: v[lo:hi] for k, v in views.items()}),
                       len(split["labels"]))


def _in_batches(probabilities, count: int, size: int = 256) -> np.ndarray:
    """``probabilities(lo, hi) -> [hi - lo]`` over ``count`` examples a batch at a time,
    without gradients."""
    import torch

    with torch.no_grad():
        out = [probabilities(start, min(count, start + size)).numpy()
               for start in range(0, count, size)]
    return np.concatenate(out) if out else np.zeros(0)


def validation_loss(head, table, split: dict) -> float:
    return log_loss(predict(head, table, split), split["labels"])


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(probs, 1e-6, 1 - 1e-6)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def train_end_of_turn(data: TurnDataSettings, settings: TurnTrainSettings,
                      progress=print) -> dict:
    """Train every arch on every inputs, ``seeds`` times; measure each and their average on
    every split; export the average or the best; returns the summary."""
    import torch

    from voxloop.codecs.end_of_turn import EndOfTurn, EndOfTurnConfig, save_end_of_turn
    from voxloop.codecs.semantic_tokens import find_semantic, load_semantic_model
    from voxloop.models import model_name, weights_sha256

    splits = {s: load_split(data.data_out, s) for s in ("train", *EVAL_SPLITS)}
    for split, built_by in (("train", "--train-items"), ("valid", "--eval-items")):
        if not len(splits[split]["labels"]):
            from voxloop.errors import VoxloopError

            raise VoxloopError(f"{data.data_out} holds no {split} examples, and the heads "
                               f"need them (valid chooses each head's epoch): build them "
                               f"with {built_by} N")
    torch.set_num_threads(settings.threads)
    semantic = find_semantic(data.semantic)
    tokenizer = load_semantic_model(semantic)
    table = tokenizer.codebook_vectors()
    base = EndOfTurnConfig(hidden_dim=settings.hidden_dim, code_dim=table.shape[1],
                           codebook_size=table.shape[0], semantic=model_name(semantic),
                           semantic_sha256=weights_sha256(semantic))
    results, heads = {}, {}
    for inputs in settings.inputs:
        width = tokenizer.blocks.encoder.width if inputs == "encoder" else table.shape[1]
        for arch in settings.archs:
            for seed in range(settings.train_seed, settings.train_seed + settings.seeds):
                name = f"{arch} on {inputs}" + (f", seed {seed}" if settings.seeds > 1 else "")
                t0 = time.perf_counter()
                head, val = train_head(replace(base, arch=arch, inputs=inputs, code_dim=width),
                                       table,
                                       splits["train"], splits["valid"],
                                       replace(settings, train_seed=seed), progress)
                heads[name] = head
                results[name] = {
                    "valid_loss": val, "train_s": time.perf_counter() - t0,
                    "parameters": sum(p.numel() for p in head.parameters()),
                    "splits": {s: measure(predict(head, table, d), d["labels"], d["kinds"],
                                           d["one_breath"])
                               for s, d in splits.items()}}
    if settings.ensemble and len(heads) > 1:
        chosen, export = "average", list(heads.values())
        average = EndOfTurn(tokenizer, export)
        probs = {s: predict_model(average, d) for s, d in splits.items()}
        results[chosen] = {
            "valid_loss": log_loss(probs["valid"], splits["valid"]["labels"]),
            "train_s": sum(r["train_s"] for r in results.values()),
            "parameters": sum(r["parameters"] for r in results.values()),
            "splits": {s: measure(probs[s], d["labels"], d["kinds"], d["one_breath"])
                       for s, d in splits.items()}}
    else:
        chosen = min(results, key=lambda a: results[a]["valid_loss"])
        export = heads[chosen]
    summary = {"chosen": chosen, "results": results, "data": asdict(data),
               "train": asdict(settings),
               "examples": {s: len(d["labels"]) for s, d in splits.items()}}
    folder = save_end_of_turn(export, settings.export, card(summary))
    (Path(folder) / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


MEASURE_COLUMNS = ("accuracy % | false cut-off % | fast % | wait p50 ms | AUC | fast at 5 % "
                   "cut-off %")


def measure_cells(m: dict) -> str:
    """``measure``'s numbers as the cells under ``MEASURE_COLUMNS``."""
    auc_cell = "-" if m.get("auc") is None else f"{m['auc']:.3f}"
    wait = "-" if m["wait_p50_ms"] is None else f"{m['wait_p50_ms']:.0f}"
    return (f"{_pct(m['accuracy'])} | {_pct(m['false_cutoff'])} | {_pct(m['fast'])} | "
            f"{wait} | {auc_cell} | {_pct(m.get('fast_at_5pct_cutoff'))}")


def train_command(data: dict, train: dict) -> str:
    """The ``voxloop distill end-of-turn`` command line of a summary's settings (the
    seeds, batch, rate and shard size only where they are not the defaults)."""
    return (f"voxloop distill end-of-turn --data-out {data['data_out']} --train-items "
            f"{data['train_items']} --eval-items {data['eval_items']} "
            + _changed_flags(data, TurnDataSettings(), ("items_per_shard", "semantic", "data_seed",
                                                     "more_phrasings"))
            + f"--augment-share {data.get('augment_share', 0.0)} --archs "
            f"{' '.join(train['archs'])} --inputs "
            f"{' '.join(train['inputs'])} --hidden-dim {train['hidden_dim']} --epochs "
            f"{train['epochs']} "
            + _changed_flags(train, TurnTrainSettings(), ("batch_size", "lr", "train_seed"))
            + f"--token-noise {train['token_noise']} --seeds {train['seeds']} "
            + ("" if train["ensemble"] else "--no-ensemble ") + f"--threads {train['threads']}"
            + ("" if train.get("export", DEFAULT_EXPORT) == DEFAULT_EXPORT else
               f" --export {train['export']}"))


def _changed_flags(values: dict, defaults, names: tuple[str, ...]) -> str:
    """``--name value `` for each of ``names`` whose value is not ``defaults``'s."""
    return "".join(f"--{name.replace('_', '-')} {values[name]} " for name in names
                   if name in values and values[name] != getattr(defaults, name))


def card(summary: dict) -> str:
    data, train = summary["data"], summary["train"]
    lines = [
        CARD_TITLE, "",
        f"Exported: `{summary['chosen']}` ("
        + ("the mean logit of every head below" if summary["chosen"] == "average" else
           "one head") +
        f"; on `codes`: the frozen codebook vectors of the tokens `{data['semantic']}` makes; "
        "on `pooled`: the vectors its VQ quantizes into them; on `encoder`: the mean of the "
        "Whisper encoder frames each of them pools), float16. " + CARD_WAIT_RULE, "",
        f"Command: `{train_command(data, train)}`", "",
        "Data: the synthetic pipeline's plan items (user voices, phrasings and splits of "
        "data/distill-v2's plan), spoken now by the same TTS voices: each question whole "
        f"(finished), cut at a random word boundary (not finished; {ONE_BREATH_SHARE:.0%} cut "
        "out of the whole question as it was said, the sentence still going, the rest the words "
        "said alone, and those finished when the words are themselves a trained question), "
        "and one of: its two parts joined by a 300-1,500 ms pause (finished; cut out of the "
        "whole or said apart, in the same shares), a filler after the cut (not finished), "
        "a filler before or inside it (finished); "
        f"{data.get('augment_share', 0.0):.0%} of the training examples with the student's "
        "user-side augmentation (speed, pitch, a room, noise, level), evaluation never. Train "
        "on the train split only; the held-out voices and phrasings never train. Examples: "
        f"{summary['examples']}.", "",
        f"Measured ({CARD_MEASURES}):", "",
        f"| head | params | split | {MEASURE_COLUMNS} |", "|---|---|---|" + "---|" * 6]
    for arch, result in summary["results"].items():
        for split, m in result["splits"].items():
            if split == "train":
                continue
            lines.append(f"| {arch} | {result['parameters']} | {split} | {measure_cells(m)} |")
    why = "the average of them all" if summary["chosen"] == "average" else \
        "the lowest validation loss"
    lines += ["", f"Chosen: `{summary['chosen']}` ({why}; validation losses: " + ", ".join(
        f"{a} {r['valid_loss']:.3f}" for a, r in summary["results"].items()) + ")."]
    return "\n".join(lines) + "\n"
