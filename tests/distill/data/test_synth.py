"""The synth job with the real teachers and codec on a tiny plan (25 examples).

One uninterrupted run is the reference. Against it: a run killed with SIGKILL
after its first shard and started again, finished by the other half of a
2-way share, gives the same shards; recoding with another codec changes the
codes, not the texts or audio; held-out voices and phrasings never reach train.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.distill.data.helpers import TINY, cli_args, comparable
from voxloop.distill.data.dataset import SPLITS, iter_examples, load_manifest
from voxloop.distill.data.plan import SynthSettings, my_shards, parse_share, plan, shards
from voxloop.distill.teachers.heldout import HELDOUT_TEMPLATE, HELDOUT_VOICES
from voxloop.errors import VoxloopError


def synth(settings: SynthSettings) -> Path:
    from voxloop.distill.data.synth import run_synth

    return run_synth(settings)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    return synth(replace(TINY, out=str(tmp_path_factory.mktemp("ref") / "ds")))


@pytest.mark.slow
def test_tiny_run_round_trips(reference):
    from voxloop.distill.data.synth import CodecRunner

    manifest = load_manifest(reference)
    assert manifest["complete"]
    assert manifest["num_codebooks"] == 8 and manifest["frame_rate_hz"] == 25.0
    assert len(manifest["codec"]["sha256"]) == 64
    examples = list(iter_examples(reference))
    planned = plan(TINY)
    assert [e.id for e in examples] == [
        it.id for split in sorted(manifest["splits"]) for it in planned if it.split == split]
    assert len({e.id for e in examples}) == len(examples) == 25
    for split, info in manifest["splits"].items():
        assert info["examples_done"] == info["examples"] == len(list(iter_examples(
            reference, split)))
    codec = CodecRunner(TINY.codec)
    for ex in examples:
        assert ex.user_codes.dtype == ex.answer_codes.dtype == np.int16
        assert ex.user_codes.shape == (8, -(-len(ex.user_audio) // 640))
        assert ex.answer_codes.shape == (8, -(-len(ex.answer_audio) // 640))
        assert ex.asr_text and ex.answer_text
        assert set(ex.meta["timing_ms"]) == {"tts_user", "asr", "llm", "tts_answer", "codec"}
    first = examples[0]
    assert np.array_equal(codec.encode(first.user_audio), first.user_codes)
    capital = [e for e in examples if e.intent == "capital" and e.user_voice == "flite:slt"]
    assert capital and all("capital of" in e.answer_text for e in capital)
    same_answer = [e for e in examples if e.answer_text == first.answer_text]
    assert all(np.array_equal(e.answer_audio, first.answer_audio) for e in same_answer)
    with pytest.raises(VoxloopError, match="unknown split"):
        next(iter_examples(reference, "test"))


@pytest.mark.slow
def test_heldout_never_in_training(reference):
    by_split = {s: list(iter_examples(reference, s)) for s in SPLITS}
    assert all(by_split[s] for s in SPLITS), {s: len(v) for s, v in by_split.items()}
    for split in ("train", "valid"):
        assert not {e.user_voice for e in by_split[split]} & set(HELDOUT_VOICES)
        assert all(e.meta["template"] != HELDOUT_TEMPLATE for e in by_split[split])
    assert all(e.user_voice in HELDOUT_VOICES for e in by_split["heldout_voice"])
    assert all(e.meta["template"] == HELDOUT_TEMPLATE for e in by_split["heldout_phrasing"])
    train_prompts = {e.prompt_text for e in by_split["train"] + by_split["valid"]}
    assert not train_prompts & {e.prompt_text for e in by_split["heldout_phrasing"]}


def test_full_plan_splits_and_shares():
    items = plan(SynthSettings())
    assert len({it.id for it in items}) == len(items)
    train = [it for it in items if it.split in ("train", "valid")]
    assert not {it.user_voice for it in train} & set(HELDOUT_VOICES)
    assert {it.template for it in train} == set(range(12)) - {HELDOUT_TEMPLATE}
    assert sum(it.split.startswith("heldout") for it in items) >= 150
    names = list(shards(items, 32))
    parts = [my_shards(names, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(names) and not set(parts[0]) & set(parts[1])
    assert plan(SynthSettings()) == items  # deterministic


@pytest.mark.parametrize("count", [6, 12])
def test_more_phrasings_add_training_templates_only(count):
    settings = SynthSettings(intents=("capital", "thanks"), voices_per_prompt=1,
                             min_turns_per_intent=0)
    base, more = plan(settings), plan(replace(settings, more_phrasings=count))
    for intent in settings.intents:  # a compositional intent and a fixed one
        assert {it.template for it in base if it.intent == intent} == set(range(12))
        extra = [it for it in more if it.template >= 12 and it.intent == intent]
        assert extra and all(it.split != "heldout_phrasing" for it in extra)
        assert all(it.user_voice not in HELDOUT_VOICES for it in extra if it.split == "train")
        assert {it.template for it in extra} == set(range(12, 12 + count))
    held = {it.prompt_text for it in more if it.split == "heldout_phrasing"}
    assert held == {it.prompt_text for it in base if it.split == "heldout_phrasing"}
    assert not held & {it.prompt_text for it in more if it.template >= 12}
    assert "more_phrasings" not in settings.plan_key()  # older plans keep their key
    assert replace(settings, more_phrasings=count).plan_key()["more_phrasings"] == count


@pytest.mark.parametrize("count", [-1, 13])
def test_more_phrasings_beyond_what_is_written_is_refused(count):
    with pytest.raises(VoxloopError, match="choose 0 to 12"):
        plan(SynthSettings(intents=("thanks",), more_phrasings=count))


def test_questions_outside_the_domain_are_the_fallbacks_phrasings():
    settings = SynthSettings(intents=("fallback",), voices_per_prompt=2, heldout_voice_prompts=1,
                             min_turns_per_intent=0, outside_questions=40)
    items = plan(settings)
    assert {it.intent for it in items} == {"fallback"}
    assert {it.template for it in items} == set(range(40))
    held = [it for it in items if it.split == "heldout_phrasing"]
    assert held and {it.template for it in held} == {HELDOUT_TEMPLATE}
    assert Counter(it.template for it in items if it.split in ("train", "valid"))[0] == 2
    assert settings.plan_key()["outside_questions"] == 40
    assert "outside_questions" not in SynthSettings().plan_key()  # older plans keep their key
    with pytest.raises(VoxloopError, match="unknown intents"):  # only with the questions
        plan(replace(settings, outside_questions=0))


def test_outside_questions_beyond_what_is_written_are_refused():
    from voxloop.distill.teachers.domain.data import outside_questions_written

    written = outside_questions_written()
    with pytest.raises(VoxloopError, match=f"choose 0 to {written}"):
        plan(SynthSettings(intents=("thanks",), outside_questions=written + 1))


def test_a_plan_keeps_its_questions_when_more_phrasings_are_written(monkeypatch):
    """A plan made when the domain had six more phrasings per intent keeps exactly its
    prompts (so its sha) now that it has more: its folder resumes and packs as before."""
    import copy

    from voxloop.distill.teachers.domain import data

    now = data.examples(4, 3, more=6)
    then = copy.deepcopy(data.load_domain())
    for intent in then["intents"] + then["compositional"]:
        for key in ("more_phrasings", "more_templates"):
            if key in intent:
                assert len(intent[key]) > 6
                intent[key] = intent[key][:6]
    monkeypatch.setattr(data, "load_domain", lambda: then)
    assert data.examples(4, 3, more=6) == now
    assert len(data.examples(4, 3, more=12)) == len(now)  # no more to add then


def test_augmentation_with_pitch_shift_is_deterministic():
    from voxloop.distill.data.augment import Augmentation, augment
    from voxloop.distill.teachers.tts import synthesize

    samples, rate_hz = synthesize("what is the capital of peru", "flite:slt")
    recipe = Augmentation(speed=0.95, pitch_semitones=-1.8, snr_db=25.0, reverb_rt60_s=0.2)
    first = augment(samples, rate_hz, recipe, seed=3)
    assert all(np.array_equal(first, augment(samples, rate_hz, recipe, seed=3))
               for _ in range(3))


def test_share_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert parse_share("") == (2, 4)
    assert parse_share("1/2") == (1, 2)
    with pytest.raises(VoxloopError):
        parse_share("2/2")


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(reference / "answers", folder / "answers")  # piper samples its prosody
    settings = replace(TINY, out=str(folder), shard="0/2")
    cmd = [sys.executable, "-m", "voxloop", "distill", "synth", *cli_args(settings)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((folder / "shards").glob("*.npz")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not load_manifest(folder)["complete"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    synth(replace(settings, shard="1/2"))
    names = sorted(p.name for p in (reference / "shards").iterdir())
    assert sorted(p.name for p in (folder / "shards").iterdir()) == names  # no leftovers
    for name in names:
        assert comparable(folder, name) == comparable(reference, name), name
    assert load_manifest(folder)["complete"]


@pytest.mark.slow
def test_recode_with_new_codec_weights(reference, tmp_path):
    from voxloop.codecs.config import CodecConfig
    from voxloop.codecs.io import save_codec
    from voxloop.codecs.registry import random_codec
    from voxloop.distill.data.synth import CodecRunner

    new_codec = save_codec(random_codec(CodecConfig()), tmp_path / "new-codec")
    folder = tmp_path / "ds"
    shutil.copytree(reference, folder)
    half = replace(TINY, out=str(folder), codec=str(new_codec), recode=True, shard="0/2",
                   intents=())  # recoding reads the manifest's shards; it does not plan
    synth(half)  # half the shards recoded: the dataset refuses to mix codecs
    with pytest.raises(VoxloopError, match="recode"):
        list(iter_examples(folder))
    synth(replace(half, shard="1/2"))
    runner = CodecRunner(str(new_codec))
    assert load_manifest(folder)["codec"]["sha256"] == runner.info["sha256"]
    old, new = list(iter_examples(reference)), list(iter_examples(folder))
    assert [(e.id, e.asr_text, e.answer_text) for e in old] == [
        (e.id, e.asr_text, e.answer_text) for e in new]
    pairs = list(zip(old, new, strict=True))
    assert all(np.array_equal(a.user_audio, b.user_audio) for a, b in pairs)
    assert not all(np.array_equal(a.user_codes, b.user_codes) for a, b in pairs)
    assert np.array_equal(runner.encode(new[0].answer_audio), new[0].answer_codes)
    assert new[0].meta["codec"]["sha256"] == runner.info["sha256"]
    assert json.loads((folder / "manifest.json").read_text())["plan_sha256"] == json.loads(
        (reference / "manifest.json").read_text())["plan_sha256"]


@pytest.mark.slow
def test_other_plan_in_same_folder_is_refused(reference, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(reference, folder, ignore=shutil.ignore_patterns("*.npz"))
    with pytest.raises(VoxloopError, match="another plan"):
        synth(replace(TINY, out=str(folder), seed=1))
    # the same plan cut into other shards: a shard of the old cut would pass as done
    with pytest.raises(VoxloopError, match="resume with --examples-per-shard"):
        synth(replace(TINY, out=str(folder), examples_per_shard=TINY.examples_per_shard + 1))


@pytest.mark.slow
def test_cli_lists_the_distill_group():
    out = subprocess.run([sys.executable, "-m", "voxloop", "distill", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "synth" in out.stdout
    dry = subprocess.run([sys.executable, "-m", "voxloop", "distill", "synth", "--dry-run",
                          *cli_args(TINY)], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("25 examples")
