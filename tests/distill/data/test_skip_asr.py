"""Training turns skip the teacher's ASR and store the intended text and answer; the
held-out turns still run ASR -> LLM on the audio. New voices speak in the real job."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from voxloop.distill.data.dataset import iter_examples
from voxloop.distill.data.plan import SynthSettings, plan

SPIDER = "A spider has eight legs."
SETTINGS = SynthSettings(
    intents=("spider_legs",), user_voices=("espeak:en-gb-x-rp+f2", "piper:joe@ls1.2",
                                           "flite:awb"),
    fills_per_template=1, voices_per_prompt=1, min_turns_per_intent=0,
    heldout_phrasing_voices=1, heldout_voice_prompts=2, valid_fraction=0.0,
    examples_per_shard=8, threads=1)


class DeafASR:
    """Hears the same out-of-domain words in everything; counts what it was given."""

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, samples: np.ndarray, rate_hz: int) -> str:
        assert samples.size > rate_hz // 4
        self.calls += 1
        return "play some music"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from voxloop.distill.data import synth

    asr = DeafASR()
    patch = pytest.MonkeyPatch()
    patch.setattr(synth, "load_asr", lambda settings: asr)
    try:
        folder = synth.run_synth(replace(SETTINGS, out=str(tmp_path_factory.mktemp("ds"))))
    finally:
        patch.undo()
    return list(iter_examples(folder)), asr


def test_training_turns_store_the_intended_answer(made):
    examples, _ = made
    train = [e for e in examples if e.split == "train"]
    assert len(train) == 11
    for e in train:
        assert e.asr_text == e.prompt_text
        assert e.answer_text == e.meta["prompt_answer"] == SPIDER
        assert e.meta["asr"] is False and e.meta["teachers"]["asr"] == "skipped"
        assert e.meta["answer_intent"] == "spider_legs"
    assert all(np.array_equal(e.answer_codes, train[0].answer_codes) for e in train)


def test_heldout_turns_run_the_teachers_on_the_audio(made):
    examples, asr = made
    held = [e for e in examples if e.split.startswith("heldout")]
    assert {e.split for e in held} == {"heldout_voice", "heldout_phrasing"}
    assert asr.calls == len(held)  # ASR ran on exactly the held-out turns
    for e in held:
        assert e.asr_text == "play some music" and e.meta["asr"] is True
        assert e.answer_text.startswith("Sorry")  # what the teacher answered to what it heard
        assert e.meta["prompt_answer"] == SPIDER  # what the prompt intends


def test_intended_targets_leave_training_turns_as_they_are(made):
    from voxloop.distill.data.targets import intended_targets

    examples, _ = made
    train = [e for e in examples if e.split == "train"]
    retargeted = intended_targets(train, lambda text: train[0].answer_codes)
    assert [(e.asr_text, e.answer_text) for e in retargeted] == [
        (e.asr_text, e.answer_text) for e in train]


def test_variant_voices_speak_in_the_job(made):
    examples, _ = made
    voices = {e.user_voice for e in examples}
    assert {"espeak:en-gb-x-rp+f2", "piper:joe@ls1.2", "flite:awb"} == voices
    planned = plan(SETTINGS)
    assert [it.id for it in planned if it.split == "train"] == [
        e.id for e in examples if e.split == "train"]
    for e in examples:
        seconds = len(e.user_audio) / 16000
        assert 0.5 < seconds < 6.0, (e.id, seconds)
        assert e.user_codes.shape[1] > 10
