"""How often the heard-intents head would fix a student's words and how often break them,
on a pack's valid turns, for each pair of thresholds (``voxloop eval heard-intents``).

The student trained on every valid phrasing, so it is rarely unsure there; the head is
what must meet phrasings it never read. So the head is fitted ``folds`` times, each time
without one share of the phrasings (template index modulo ``folds``), and reads only the
valid turns of the phrasings it left out: how sure it is where it is wrong is measured as
on held-out phrasings. The student's words are its own (greedy, head off).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from voxloop.distill.student.config import HeardIntentsConfig
from voxloop.distill.student.vocab import answer_words
from voxloop.distill.teachers.domain.data import FALLBACK_INTENT, load_domain
from voxloop.errors import VoxloopError


@dataclass(frozen=True)
class HeardIntentsEvalSettings:
    data: str = field(default="data/distill-v2", metadata={
        "help": "dataset folder or packed .npz whose valid turns are read"})
    out: str = field(default="out/heard-intents", metadata={
        "help": "where heard-intents.json and heard-intents.md go"})
    folds: int = field(default=4, metadata={"help": "phrasings left out per fit: 1 in this"})
    min_probs: tuple[float, ...] = field(default=(0.4, 0.5, 0.6, 0.7), metadata={
        "help": "the head's thresholds to measure"})
    max_logprobs: tuple[float, ...] = field(
        default=(0.0, -0.05, -0.1, -0.2, -0.5, -1.0),
        metadata={"help": "the student's thresholds to measure (0: however sure it is)"})
    max_own_probs: tuple[float, ...] = field(default=(0.02, 0.05, 1.0), metadata={
        "help": "thresholds on the head's probability of the student's own answer"})
    slot_bonuses: tuple[float, ...] = field(default=(), metadata={
        "help": "also the slot lean at each of these bonuses: the student (its head on, as "
                "bundled) again on every valid turn the head reads as a composed question "
                "(~1 min per bonus)"})
    limit: int = field(default=0, metadata={"help": "valid turns at most (0: all)"})


def template_of(turn_id: str) -> int:
    """The phrasing's index in a turn id (``water_formula-t11-festival:kal-0`` -> 11)."""
    found = re.search(r"-t(\d+)-", turn_id)
    if found is None:
        raise VoxloopError(f"turn id {turn_id!r} names no phrasing (-tN-): pack a dataset "
                         "that `voxloop distill synth` built")
    return int(found.group(1))


def _valid_turns(model_dir: str | Path, settings: HeardIntentsEvalSettings, desc: str,
                 read) -> tuple[list[dict], list[str]]:
    """``read(model, tokenizer, user codes)`` (a dict, or None to leave the turn out) for
    each valid turn, on one thread, with the turn's id, intent and intended answer; and the
    ears' vocabulary."""
    import torch
    from tqdm import tqdm

    from voxloop.distill.student.model import load_student
    from voxloop.distill.student.residual_levels import residual_books
    from voxloop.distill.student.train_data import load_data
    from voxloop.distill.student.vocab import Tokenizer

    model, vocab = load_student(model_dir)
    tokenizer, out = Tokenizer(vocab), Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(settings.data, out, vocab, splits=("valid",),
                     residual_books=residual_books(model))
    turns, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in tqdm(data.indices("valid")[:settings.limit or None], desc=desc, unit="turn"):
            found = read(model, tokenizer, data.user(i))
            if found is not None:
                turns.append({"id": str(data.id[i]), "intent": str(data.intent[i]),
                              "intended": str(data.intended_text[i] or data.answer_text[i]),
                              **found})
    finally:
        torch.set_num_threads(threads)
    return turns, vocab["ctc"]


def student_turns(model_dir: str | Path,
                  settings: HeardIntentsEvalSettings) -> tuple[list[dict], list[str]]:
    """The student's own words (head off), their log-probability and what it heard, for
    each valid turn; and its ears' vocabulary."""
    from voxloop.distill.student.generate import SamplingOptions
    from voxloop.distill.student.one_turn import generate

    def read(model, tokenizer, user) -> dict:
        made = generate(model, tokenizer, user, SamplingOptions(heard_intents=False),
                        chunk_frames=5)
        return {"student": made.text, "logprob": made.text_logprob, "heard": made.heard}

    return _valid_turns(model_dir, settings, "valid turns", read)


def slot_lean(model_dir: str | Path, settings: HeardIntentsEvalSettings) -> list[dict]:
    """The student's words (its head on, as bundled) with no slot lean and with each of
    ``settings.slot_bonuses``, on the valid turns where the head reads a composed question
    and heard a slot value: ``{"0.0": words, "4.0": words, ...}`` per turn."""
    from dataclasses import replace

    from voxloop.distill.student.generate import SamplingOptions
    from voxloop.distill.student.one_turn import generate

    def read(model, tokenizer, user) -> dict | None:
        head = model.heard_intents
        config = head.config
        try:
            head.config = replace(config, slot_bonus=0.0)
            made = generate(model, tokenizer, user, SamplingOptions(), chunk_frames=5)
            if not head.slots(made.heard):  # no lean to measure: the same words at any bonus
                return None
            words = {"0.0": made.text}
            for bonus in settings.slot_bonuses:
                head.config = replace(config, slot_bonus=bonus)
                words[str(float(bonus))] = generate(model, tokenizer, user, SamplingOptions(),
                                                    chunk_frames=5).text
        finally:
            head.config = config
        return {"heard": made.heard, "words": words}

    return _valid_turns(model_dir, settings, "slot lean", read)[0]


def lean_trade(turns: list[dict], bonus: float) -> dict:
    """Turns the slot lean at ``bonus`` fixes and breaks, against none."""
    counts = {"fixed": 0, "broken": 0}
    for turn in turns:
        wanted = answer_words(turn["intended"])
        before = answer_words(turn["words"]["0.0"]) == wanted
        after = answer_words(turn["words"][str(float(bonus))]) == wanted
        if before != after:
            counts["broken" if before else "fixed"] += 1
    return counts


def read_by_folds(turns: list[dict], ctc_words: list[str], folds: int) -> None:
    """Each turn's ``head_answer`` and ``head_prob``: the head fitted without its phrasing's
    fold, its most likely intent's fixed answer (None for a composed one) and probability."""
    from voxloop.distill.student.heard_intents import fit_heard_intents

    for fold in range(folds):
        left_out = frozenset(t for t in range(100) if t % folds == fold)
        head = fit_heard_intents(ctc_words, HeardIntentsConfig(), left_out)
        for turn in turns:
            if template_of(turn["id"]) % folds != fold or turn["intent"] == FALLBACK_INTENT:
                continue
            turn["head_answer"], turn["head_prob"] = head.read(turn["heard"])
            turn["own_prob"] = head.answer_prob(turn["heard"], turn["student"])


def trade(turns: list[dict], min_prob: float, max_logprob: float,
          max_own_prob: float = 1.0) -> dict:
    """Turns the override fixes, breaks, and changes from wrong to another wrong."""
    counts = {"fixed": 0, "broken": 0, "still_wrong": 0}
    for turn in turns:
        answer = turn.get("head_answer")
        if answer is None or turn["head_prob"] < min_prob or turn["logprob"] > max_logprob \
                or turn["own_prob"] > max_own_prob:
            continue
        wanted, own = answer_words(turn["intended"]), answer_words(turn["student"])
        if own == answer_words(answer):
            continue
        right_now = answer_words(answer) == wanted
        key = "broken" if own == wanted else "fixed" if right_now else "still_wrong"
        counts[key] += 1
    return counts


def measure_heard_intents(model_dir: str | Path, settings: HeardIntentsEvalSettings) -> dict:
    """Run the measurement; writes ``heard-intents.json`` and ``heard-intents.md``."""
    from voxloop.distill.student.heard_intents import FILENAME
    from voxloop.distill.student.model import student_folder

    if settings.slot_bonuses and not (student_folder(model_dir) / FILENAME).is_file():
        raise VoxloopError(f"{model_dir} has no heard-intents head to lean with "
                           f"(--slot-bonuses): fit one with `voxloop distill heard-intents "
                           f"{model_dir}`")
    turns, ctc_words = student_turns(model_dir, settings)
    read_by_folds(turns, ctc_words, settings.folds)
    right = sum(answer_words(t["student"]) == answer_words(t["intended"]) for t in turns)
    grid = [{"min_prob": p, "max_logprob": lp, "max_own_prob": own, **trade(turns, p, lp, own)}
            for p in settings.min_probs for lp in settings.max_logprobs
            for own in settings.max_own_probs]
    leaned = slot_lean(model_dir, settings) if settings.slot_bonuses else []
    result = {"model": str(model_dir), "turns": len(turns), "student_right": right,
              "settings": {**settings.__dict__}, "grid": grid,
              "fixed_answers": len(load_domain()["intents"]),
              "slot_turns": len(leaned),
              "slot_lean": [{"bonus": b, **lean_trade(leaned, b)} for b in settings.slot_bonuses]}
    out = Path(settings.out)
    (out / "heard-intents.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "heard-intents.md").write_text(format_report(result))
    return result


def format_report(result: dict) -> str:
    lines = [f"# Heard intents on {result['turns']} valid turns ({result['model']})", "",
             f"The student's words right on {result['student_right']}; the head fitted "
             f"{result['settings']['folds']} times, each without the phrasings it reads.", "",
             "| min_prob | max_logprob | max_own_prob | fixed | broken | still wrong |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {g['min_prob']} | {g['max_logprob']} | {g['max_own_prob']} | {g['fixed']} | "
              f"{g['broken']} | {g['still_wrong']} |" for g in result["grid"]]
    if result.get("slot_lean"):
        lines += ["", f"Slot lean on the {result['slot_turns']} valid turns the head reads as a "
                  "composed question with a slot value heard (against no lean):", "",
                  "| slot_bonus | fixed | broken |", "|---|---|---|"]
        lines += [f"| {g['bonus']} | {g['fixed']} | {g['broken']} |" for g in result["slot_lean"]]
    return "\n".join(lines) + "\n"
