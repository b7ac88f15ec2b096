"""The v2 synth plan: every phrasing and fill, many voices, >= 30k training turns, the
held-out splits as small and as clean as before; which turns run the teacher's ASR."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from voxloop.distill.data.plan import SynthSettings, plan, voice_weights
from voxloop.distill.teachers.domain.data import intent_ids, load_domain
from voxloop.distill.teachers.heldout import (
    HELDOUT_TEMPLATE,
    HELDOUT_VOICES,
    SAME_SPEAKER_AS_HELDOUT,
)
from voxloop.errors import VoxloopError

HELDOUT_SPLITS = ("heldout_voice", "heldout_phrasing")


@pytest.fixture(scope="module")
def items():
    return plan(SynthSettings())


def test_default_plan_has_30k_training_turns(items):
    counts = Counter(it.split for it in items)
    print(f"\n{dict(counts)}")
    assert counts["train"] >= 30_000
    assert 0.02 * counts["train"] < counts["valid"] < 0.05 * counts["train"]
    assert all(150 <= counts[s] <= 400 for s in HELDOUT_SPLITS), counts
    assert len({it.id for it in items}) == len(items)
    train_voices = {it.user_voice for it in items if it.split == "train"}
    assert len(train_voices) >= 100 and any("@" in v for v in train_voices)


def test_no_heldout_voice_or_phrasing_in_train_or_valid(items):
    trained = [it for it in items if it.split in ("train", "valid")]
    assert not {it.user_voice for it in trained} & set(HELDOUT_VOICES)
    # nor a held-out voice's speaker under another backend's name (when installed)
    assert not {it.user_voice for it in items} & set(SAME_SPEAKER_AS_HELDOUT)
    assert HELDOUT_TEMPLATE not in {it.template for it in trained}
    assert {it.template for it in trained} == set(range(12)) - {HELDOUT_TEMPLATE}
    held_phrasing = [it for it in items if it.split == "heldout_phrasing"]
    assert {it.template for it in held_phrasing} == {HELDOUT_TEMPLATE}
    assert not {it.user_voice for it in held_phrasing} & set(HELDOUT_VOICES)
    assert not {it.prompt_text for it in trained} & {it.prompt_text for it in held_phrasing}
    held_voice = [it for it in items if it.split == "heldout_voice"]
    assert {it.user_voice for it in held_voice} == set(HELDOUT_VOICES)
    for split in HELDOUT_SPLITS:  # every intent is measured in both
        assert {it.intent for it in items if it.split == split} == set(intent_ids()), split


def test_every_fill_of_every_training_template_is_spoken(items):
    adds = {(it.template, dict(it.slots)["a"], dict(it.slots)["b"]) for it in items
            if it.intent == "add" and it.split in ("train", "valid")}
    assert len(adds) == 11 * 21 * 20
    capitals = {dict(it.slots)["country"] for it in items
                if it.intent == "capital" and it.split == "train"}
    assert capitals == set(load_domain()["capitals"])


def test_small_intents_get_more_voices_and_no_backend_drowns_the_others(items):
    trained = [it for it in items if it.split in ("train", "valid")]
    per_intent = Counter(it.intent for it in trained)
    assert min(per_intent.values()) >= SynthSettings().min_turns_per_intent
    greeting = Counter(it.prompt_text for it in trained if it.intent == "greeting")
    assert min(greeting.values()) >= 15  # each phrasing by many voices
    backends = Counter(it.user_voice.split(":")[0] for it in trained)
    shares = {b: n / len(trained) for b, n in backends.items()}
    assert set(shares) == {"espeak", "piper", "flite", "festival"}
    assert shares["espeak"] < 0.8 and min(shares.values()) > 0.03, shares
    weights = voice_weights(["espeak:a", "espeak:b", "espeak:c", "espeak:d", "flite:x"])
    assert weights.sum() == pytest.approx(1.0) and weights[4] == pytest.approx(2 * weights[0])


def test_augmentation_is_varied_and_seeded(items):
    trained = [it for it in items if it.split == "train"]
    recipes = [it.augmentation for it in trained if it.augmentation]
    assert 0.6 < len(recipes) / len(trained) < 0.8
    assert {r["noise_color"] for r in recipes if r["snr_db"] is not None} == {
        "white", "pink", "brown"}
    rooms = [r for r in recipes if r["reverb_rt60_s"]]
    assert len(rooms) > 0.3 * len(recipes)
    assert len({round(r["reverb_drr_db"]) for r in rooms}) > 10
    assert len({it.seed for it in trained}) > 0.99 * len(trained)


def test_only_heldout_turns_run_the_teachers_asr(items):
    assert {it.split for it in items if it.asr} == set(HELDOUT_SPLITS)
    assert not any(it.asr for it in items if it.split in ("train", "valid"))
    settings = replace(SynthSettings(), intents=("greeting",))
    assert all(it.asr for it in plan(replace(settings, asr_splits=("all",))))
    assert not any(it.asr for it in plan(replace(settings, asr_splits=("none",))))
    with pytest.raises(VoxloopError, match="asr-splits"):
        plan(replace(settings, asr_splits=("test",)))


def test_plan_is_deterministic(items):
    assert plan(SynthSettings()) == items


def test_a_question_in_a_voice_is_valid_in_every_plan_or_in_none(items):
    """A plan of another seed (``--extra-train``) says some of the same questions in the
    same voices: each such turn is in the same split in both, so none trains on valid."""
    other = plan(SynthSettings(seed=1))
    split_of = {(it.prompt_text, it.user_voice): it.split for it in items
                if it.split in ("train", "valid")}
    shared = [(it, split_of[(it.prompt_text, it.user_voice)]) for it in other
              if it.split in ("train", "valid") and (it.prompt_text, it.user_voice) in split_of]
    assert len(shared) > 100 and sum(split == "valid" for _, split in shared) > 0
    assert all(it.split == split for it, split in shared)


def test_corpus_refuses_to_resume_another_plan(tmp_path):
    from voxloop.distill.data.corpus import CorpusSettings, build_corpus

    (tmp_path / "manifest.jsonl").write_text(json.dumps(
        {"uid": "train-x-0000", "text": "hello", "voice": "flite:slt", "split": "train",
         "augmentation": None}) + "\n")
    with pytest.raises(VoxloopError, match="another corpus plan"):
        build_corpus(CorpusSettings(out=str(tmp_path)))
