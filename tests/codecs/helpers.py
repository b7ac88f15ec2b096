"""Shared by the codec tests and the reliability suite's killed-job tests."""

from __future__ import annotations

import numpy as np

from voxloop.audio import write_wav


def write_tiny_corpus(root):
    """Six half-second warbling tones at 16 kHz: four to train on, two held out."""
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for split, count in (("train", 4), ("heldout", 2)):
        for i in range(count):
            tone = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) * (1 + 0.5 * np.sin(6 * t))
            write_wav(root / split / f"{i}.wav", tone + 0.01 * rng.standard_normal(t.size), 16000)
    return root


def assert_resume_is_exact(run, root, steps: int, stop_at: int) -> None:
    """``run(out, stop_at)`` trains a run folder for ``steps`` steps (``stop_at``: end after
    that step's checkpoint, as a kill would, or None). Stopped and run again, it ends with
    the same checkpoint as a run straight through."""
    import torch

    def checkpoint(name):
        return torch.load(root / name / "checkpoint.pt", weights_only=False)

    run(root / "straight", None)
    run(root / "resumed", stop_at)
    assert checkpoint("resumed")["step"] == stop_at
    run(root / "resumed", None)
    a, b = checkpoint("straight"), checkpoint("resumed")
    assert a["step"] == b["step"] == steps
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
