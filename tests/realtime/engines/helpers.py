"""Reading a batcher's answer queue in tests (the batcher and semantic-engine tests)."""

from __future__ import annotations

import numpy as np

from voxloop.realtime.engines.answers import Answer, Done, Failed, Frame, Reason, Word


def collect(answer: Answer) -> tuple[list[str], np.ndarray, Reason]:
    """Every word and frame of one answer until it ends: ``(words, codes [K, F], reason)``;
    a failure or a model thread that stops answering fails the test."""
    words, frames = [], []
    while True:
        match answer.get(10.0):
            case None:
                raise AssertionError("the model thread stopped answering")
            case Failed(error):
                raise AssertionError(error)
            case Word(text):
                words.append(text)
            case Frame(codes):
                frames.append(codes)
            case Done(reason):
                stacked = np.stack(frames, 1) if frames else np.zeros((4, 0), np.int64)
                return words, stacked, reason
