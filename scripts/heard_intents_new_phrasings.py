"""The heard-intents head on phrasings no model ever read (the domain's dev phrasings,
``distill/teachers/domain/dev_phrasings.json``: 158 questions written for this check, none
a trained or held-out phrasing of the domain nor sharing more than half its words with the
held-out one), each spoken by training
voices (70 % augmented, as the datasets are) and tokenized as the student hears: the
student's own words (head off) and its words with the head on as bundled (the override
and the slot lean), then how many the override alone would fix and break for each set of
thresholds. The valid split holds only phrasings the student trained on; these are
new to it, as held-out phrasings are, without touching the held-out split.

A composed question's intended answer is the scripted teacher's answer to the intent's
first template with the same slots.

Usage: python scripts/heard_intents_new_phrasings.py [--student voxloop-student]
           [--voices-per-phrasing 3] [--seed 11] [--out out/heard-intents-new.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.data.augment import spoken
from voxloop.distill.data.plan import (
    SynthSettings,
    training_voices,
    user_voices,
    voice_weights,
)
from voxloop.distill.evals.heard_intents import trade
from voxloop.distill.student.generate import SamplingOptions
from voxloop.distill.student.model import load_student
from voxloop.distill.student.one_turn import generate
from voxloop.distill.student.user_tokens import encode_clips, load_student_semantic
from voxloop.distill.student.vocab import Tokenizer, answer_words
from voxloop.distill.teachers.domain.assistant import ScriptedAssistant
from voxloop.distill.teachers.domain.data import dev_examples, load_domain

GRID = [(p, lp, own) for p in (0.4, 0.5, 0.6, 0.7) for lp in (0.0, -0.1, -0.2, -0.5)
        for own in (0.02, 0.05, 1.0)]


def questions(voices_per: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """``(intent, question, intended answer)``, each phrasing ``voices_per`` times."""
    domain, teacher = load_domain(), ScriptedAssistant()
    fixed = {i["id"]: i["answer"] for i in domain["intents"]}
    composed = {i["id"]: i for i in domain["compositional"]}
    out = []
    for e in dev_examples(voices_per, rng):
        if e.intent in fixed:
            out.append((e.intent, e.text, fixed[e.intent]))
            continue
        reference = composed[e.intent]["templates"][0].format(**dict(e.slots))
        out.append((e.intent, e.text, teacher.reply([], reference)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="voxloop-student")
    parser.add_argument("--voices-per-phrasing", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", default="out/heard-intents-new.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    model, vocab = load_student(args.student)
    if model.heard_intents is None:
        raise SystemExit(f"error: {args.student} has no heard-intents head: fit one with "
                         f"`voxloop distill heard-intents {args.student}`")
    ears, tokenizer = load_student_semantic(None, vocab, model), Tokenizer(vocab)
    voices = training_voices(user_voices(SynthSettings()))
    weights, turns, t0 = voice_weights(voices), [], time.perf_counter()
    asked = questions(args.voices_per_phrasing, rng)
    for intent, text, intended in asked:
        voice = str(rng.choice(voices, p=weights))
        codes = encode_clips(ears, [spoken(text, voice, rng)])[0]
        user = codes.reshape(-1, codes.shape[-1])
        made = generate(model, tokenizer, user, SamplingOptions(heard_intents=False),
                        chunk_frames=5)
        with_head = generate(model, tokenizer, user, SamplingOptions(), chunk_frames=5)
        head_answer, head_prob = model.heard_intents.read(made.heard)
        turns.append({"intent": intent, "question": text, "voice": voice,
                      "intended": intended, "student": made.text, "logprob": made.text_logprob,
                      "heard": made.heard, "head_answer": head_answer, "head_prob": head_prob,
                      "own_prob": model.heard_intents.answer_prob(made.heard, made.text),
                      "with_head": with_head.text})
    right = {key: [answer_words(t[key]) == answer_words(t["intended"]) for t in turns]
             for key in ("student", "with_head")}
    fixed = sum(on and not off for off, on in zip(*right.values(), strict=True))
    broken = sum(off and not on for off, on in zip(*right.values(), strict=True))
    grid = [{"min_prob": p, "max_logprob": lp, "max_own_prob": own,
             **trade(turns, p, lp, own)} for p, lp, own in GRID]
    print(f"{len(turns)} turns in {time.perf_counter() - t0:.0f} s; the student's words "
          f"right on {sum(right['student'])} ({100 * sum(right['student']) / len(turns):.1f} %) "
          f"with its head off, {sum(right['with_head'])} "
          f"({100 * sum(right['with_head']) / len(turns):.1f} %) with it on as bundled "
          f"({fixed} fixed, {broken} broken: the override and the slot lean)")
    print("min_prob max_logprob max_own_prob fixed broken still_wrong (the override alone)")
    for row in grid:
        print(row["min_prob"], row["max_logprob"], row["max_own_prob"], row["fixed"],
              row["broken"], row["still_wrong"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "student": args.student, "turns": turns, "student_right": sum(right["student"]),
        "with_head_right": sum(right["with_head"]), "fixed": fixed, "broken": broken,
        "grid": grid}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
