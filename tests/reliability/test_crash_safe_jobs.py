"""``kill -9`` at random points of the real jobs, then start them again until they finish.

Each job runs once uninterrupted (the reference) and once killed with SIGKILL at
random moments (during start-up, mid-step, mid-write: uniformly over the
reference's wall time, and once just after fresh progress was saved) and
restarted each time with the same command line. Then:

- ``voxloop distill synth``: every shard is identical in content to the
  reference's (texts, codes, audio, meta but timings), the manifest is complete
  and no temporary file is left;
- ``voxloop distill train`` and ``voxloop codec train``: the final checkpoint has
  the same step count and bit-identical weights and optimizer state (so every
  resumed step saw the reference's batches in the reference's order), and the
  best model / exported codec is the same.

The kill times come from a seeded generator; the seed is printed (``KILL_SEED``
replays a run).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.codecs.helpers import write_tiny_corpus
from tests.distill.data.helpers import TINY, cli_args, comparable
from tests.reliability.helpers import ROOT

pytestmark = pytest.mark.reliability_slow
KILLS = 4


def seeded() -> random.Random:
    seed = int(os.environ.get("KILL_SEED", str(time.time_ns() % 10**6)))
    print(f"\nKILL_SEED={seed}")
    return random.Random(seed)


def run_job(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` to the end; its wall time in seconds."""
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, timeout=900)
    assert done.returncode == 0, log.read_text()[-3000:]
    return time.perf_counter() - t0


def kill_and_finish(cmd: list[str], log: Path, progress: Callable[[], int], reference_s: float,
                    rng: random.Random) -> list[str]:
    """SIGKILL ``cmd`` KILLS times (the last just after new progress appeared), then run it to
    the end; what each kill hit, as text."""
    kills = []
    for k in range(KILLS):
        before = progress()
        with open(log, "ab") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        t0 = time.perf_counter()
        if k < KILLS - 1:
            deadline = t0 + rng.uniform(0.1, 0.9) * reference_s
            while time.perf_counter() < deadline and proc.poll() is None:
                time.sleep(0.01)
        else:  # at least one kill after the job saved progress in this very run
            while progress() <= before and proc.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            kills.append(f"finished before kill {k}")
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(f"at {time.perf_counter() - t0:.1f} s (progress {before} -> {progress()})")
    run_job(cmd, log)
    return kills


# -- distill synth ---------------------------------------------------------------------
def shard_count(folder: Path) -> int:
    return len(list((folder / "shards").glob("*.npz")))


def test_distill_synth_killed_at_random_points(tmp_path):
    from voxloop.distill.data.dataset import load_manifest

    rng = seeded()
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    tiny = replace(TINY, examples_per_shard=1)  # 25 shards: many boundaries to hit

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "voxloop", "distill", "synth",
                *cli_args(replace(tiny, out=str(out)))]

    reference_s = run_job(cmd(ref), tmp_path / "ref.log")
    killed.mkdir()
    shutil.copytree(ref / "answers", killed / "answers")  # piper samples its prosody
    kills = kill_and_finish(cmd(killed), tmp_path / "killed.log",
                            lambda: shard_count(killed), reference_s, rng)
    print(f"synth: reference {reference_s:.0f} s; kills {kills}")
    names = sorted(p.name for p in (ref / "shards").iterdir())
    assert sorted(p.name for p in (killed / "shards").iterdir()) == names
    for name in names:
        assert comparable(killed, name) == comparable(ref, name), name
    assert load_manifest(killed)["complete"]
    assert not list(killed.rglob("*.tmp")), list(killed.rglob("*.tmp"))


# -- distill train ---------------------------------------------------------------------
def checkpoint_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)["step"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


def assert_same_state(a, b, where: str = "") -> None:
    """Nested dicts / lists of tensors and numbers, compared exactly."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), (where, a, b)  # NaN == NaN here


def test_distill_train_killed_at_random_points(tmp_path):
    from tests.distill.student.fixtures import tiny_examples, tiny_packed

    rng = seeded()
    data = tmp_path / "codes.npz"
    tiny_packed(tiny_examples(8) + tiny_examples(3, seed=1, split="valid")).save(data)

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "voxloop", "distill", "train", "--data", str(data),
                "--out", str(out), "--steps", "300", "--batch-size", "4", "--lr", "3e-3",
                "--warmup-steps", "20", "--eval-every", "25", "--ckpt-every", "10",
                "--threads", "1", "--device", "cpu", "--student-d-model", "64",
                "--student-n-layers", "2", "--student-n-heads", "4", "--student-n-kv-heads", "2",
                "--student-max-len", "128", "--student-dropout", "0.1"]

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    reference_s = run_job(cmd(ref), tmp_path / "ref.log")
    kills = kill_and_finish(cmd(killed), tmp_path / "killed.log",
                            lambda: checkpoint_step(killed / "checkpoint.pt"), reference_s, rng)
    print(f"distill train: reference {reference_s:.0f} s; kills {kills}")
    for name in ("checkpoint.pt", "best.pt"):
        a = torch.load(ref / name, map_location="cpu", weights_only=False)
        b = torch.load(killed / name, map_location="cpu", weights_only=False)
        assert a["step"] == b["step"], name
        assert_same_state(a, b, name)
    assert torch.load(killed / "checkpoint.pt", weights_only=False)["step"] == 300


# -- codec train -----------------------------------------------------------------------
def test_codec_train_killed_at_random_points(tmp_path):
    rng = seeded()
    corpus = write_tiny_corpus(tmp_path / "corpus")

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "voxloop", "codec", "train", "--corpus", str(corpus),
                "--out", str(out), "--steps", "60", "--batch-size", "2", "--segment-s", "0.1",
                "--lr", "3e-3", "--warmup-steps", "2", "--ckpt-every", "4", "--eval-every", "20",
                "--threads", "1", "--device", "cpu", "--codec-ratios", "4", "4", "2",
                "--codec-n-filters", "4", "--codec-dimension", "16", "--codec-num-codebooks", "2",
                "--codec-cardinality", "16"]

    ref, killed = tmp_path / "ref", tmp_path / "killed"
    reference_s = run_job(cmd(ref), tmp_path / "ref.log")
    kills = kill_and_finish(cmd(killed), tmp_path / "killed.log",
                            lambda: checkpoint_step(killed / "checkpoint.pt"), reference_s, rng)
    print(f"codec train: reference {reference_s:.0f} s; kills {kills}")
    a = torch.load(ref / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(killed / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert a["step"] == b["step"] == 60
    for part in ("model", "optimizer", "discriminator", "disc_optimizer", "torch_rng"):
        assert_same_state(a[part], b[part], part)
    from safetensors.torch import load_file  # (its header's metadata order varies per process)

    assert_same_state(load_file(ref / "final" / "model.safetensors"),
                      load_file(killed / "final" / "model.safetensors"), "final")
    assert (ref / "final" / "config.json").read_text() == (
        killed / "final" / "config.json").read_text()
