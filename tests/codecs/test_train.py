"""Codec training on a tiny corpus: loss falls, resuming after a stop is exact, export loads."""

from __future__ import annotations

import pytest
import torch

from tests.codecs.helpers import assert_resume_is_exact, write_tiny_corpus
from voxloop.codecs.config import CodecConfig, CodecTrainSettings
from voxloop.codecs.io import load_codec_folder
from voxloop.codecs.train import export_checkpoint, train
from voxloop.errors import VoxloopError

pytestmark = pytest.mark.slow  # codec training runs (and torchrun)

TINY = CodecConfig(ratios=(4, 4, 2), n_filters=4, dimension=16, num_codebooks=2, cardinality=16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def _settings(corpus, out, steps):
    return CodecTrainSettings(corpus=str(corpus), out=str(out), steps=steps, batch_size=2,
                              segment_s=0.1, lr=3e-3, warmup_steps=2, ckpt_every=2,
                              eval_every=4, threads=1)


def test_resume_after_a_stop_is_exact(corpus, tmp_path):
    assert_resume_is_exact(lambda out, stop_at: train(_settings(corpus, out, 6), TINY,
                                                      stop_at=stop_at), tmp_path, 6, stop_at=2)


def test_loss_falls_and_export_loads(corpus, tmp_path):
    from voxloop.codecs.losses import MultiScaleMelLoss
    from voxloop.codecs.train import evaluate_loss, load_split

    out = train(_settings(corpus, tmp_path / "run", 40), TINY)
    held = load_split(corpus, "heldout", 16000)
    with pytest.raises(VoxloopError, match="at 16000 Hz and this codec at 24000"):
        load_split(corpus, "heldout", 24000)
    fresh = load_codec_folder(out / "final")
    export_checkpoint(out / "checkpoint.pt", tmp_path / "bundle")
    bundled = load_codec_folder(tmp_path / "bundle")
    assert bundled.config == TINY
    torch.manual_seed(0)
    from voxloop.codecs.io import new_codec

    untrained = new_codec(TINY).eval()
    mel = MultiScaleMelLoss(16000)
    trained_loss = evaluate_loss(fresh, mel, held, 1600)["mel"]
    with torch.no_grad():  # an untrained codec needs its codebooks initialized once
        untrained.train()(torch.zeros(2, 1, 1600))
    assert trained_loss < evaluate_loss(untrained.eval(), mel, held, 1600)["mel"]


def test_changed_config_refuses_to_resume(corpus, tmp_path):
    train(_settings(corpus, tmp_path / "run", 2), TINY)
    other = CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, num_codebooks=2,
                        cardinality=16)
    with pytest.raises(VoxloopError, match="another codec config"):
        train(_settings(corpus, tmp_path / "run", 4), other)


def test_missing_corpus_says_how_to_build_it(tmp_path):
    with pytest.raises(VoxloopError, match="voxloop distill corpus"):
        train(_settings(tmp_path / "nothing", tmp_path / "run", 2), TINY)


def test_torchrun_ddp_two_processes(corpus, tmp_path):
    """Two gloo processes train together; rank 0 writes the checkpoint and the export."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "voxloop", "codec", "train", "--corpus", str(corpus), "--out", str(out),
           "--steps", "3", "--batch-size", "2", "--segment-s", "0.1", "--ckpt-every", "3",
           "--threads", "1", "--codec-ratios", "4", "4", "2", "--codec-n-filters", "4",
           "--codec-dimension", "16", "--codec-num-codebooks", "2", "--codec-cardinality", "16",
           "--export", str(tmp_path / "bundle")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3
    assert load_codec_folder(tmp_path / "bundle").config == TINY


def test_time_budget_plans_the_steps_and_resume_keeps_them(corpus, tmp_path):
    """A tiny budget ends the run right after the timed probe; the plan is checkpointed."""
    from dataclasses import replace

    from voxloop.codecs.train import PROBE_SKIP, PROBE_STEPS

    settings = replace(_settings(corpus, tmp_path / "run", 100), time_budget_s=1e-3,
                       warmup_steps=40)
    train(settings, TINY)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["step"] == state["total_steps"] == PROBE_SKIP + PROBE_STEPS
    train(replace(settings, time_budget_s=1e6), TINY)  # resumed: the plan stands
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 25


def test_init_from_a_bundle_fine_tunes_it(corpus, tmp_path):
    from dataclasses import replace

    from voxloop.codecs.io import save_codec

    torch.manual_seed(5)
    start = new_codec_with_codebooks()
    save_codec(start, tmp_path / "start")
    settings = replace(_settings(corpus, tmp_path / "run", 1), init_from=str(tmp_path / "start"),
                       lr=1e-9, adversarial=False)
    train(settings, TINY)
    tuned = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["model"]
    # (the codebooks themselves move at once: EMA updates, dead codes re-seeded)
    on_disk = load_codec_folder(tmp_path / "start").state_dict()
    for key in ("encoder.model.0.conv.conv.weight_v", "decoder.model.0.conv.conv.weight_g"):
        torch.testing.assert_close(tuned[key], on_disk[key], atol=1e-3, rtol=1e-3)
    with pytest.raises(VoxloopError, match="another codec config"):
        train(replace(settings, out=str(tmp_path / "other")),
              CodecConfig(ratios=(4, 4, 2), n_filters=8, dimension=16, num_codebooks=2,
                          cardinality=16))
    torch.save({"step": 3}, tmp_path / "not-a-codec.pt")  # a checkpoint of something else
    with pytest.raises(VoxloopError, match="not a codec checkpoint"):
        train(replace(settings, out=str(tmp_path / "third"),
                      init_from=str(tmp_path / "not-a-codec.pt")), TINY)


def new_codec_with_codebooks():
    from voxloop.codecs.registry import random_codec

    return random_codec(TINY)
