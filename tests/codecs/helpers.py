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
