"""Silero VAD through onnxruntime, with explicit per-stream state.

The model is the one shipped in the ``silero-vad`` wheel. One inference session
serves every stream (onnxruntime sessions are thread-safe); each stream keeps its
own recurrent state and 64-sample context, so sessions never leak into each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from voxloop.audio import MODEL_RATE_HZ
from voxloop.errors import MissingDependencyError

VAD_RATE_HZ = MODEL_RATE_HZ  # Silero hears 16 kHz
WINDOW_SAMPLES = 512  # 32 ms at 16 kHz: the window the model was trained on
CONTEXT_SAMPLES = 64

_session = None
_session_lock = threading.Lock()


def _inference_session():
    global _session
    with _session_lock:
        if _session is None:
            try:
                import onnxruntime
                path = resources.files("silero_vad") / "data" / "silero_vad.onnx"
            except ImportError as exc:
                raise MissingDependencyError(
                    f"Silero VAD needs {exc.name}: run `make bootstrap` "
                    "(or pip install silero-vad onnxruntime)") from exc
            opts = onnxruntime.SessionOptions()
            opts.inter_op_num_threads = opts.intra_op_num_threads = 1
            _session = onnxruntime.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return _session


@dataclass
class VADState:
    recurrent: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT_SAMPLES, np.float32))


class SileroVAD:
    """Speech probability of consecutive 512-sample windows at 16 kHz."""

    def __init__(self) -> None:
        self._session = _inference_session()
        self._sr = np.array(VAD_RATE_HZ, dtype=np.int64)

    def __call__(self, window: np.ndarray, state: VADState) -> float:
        """``window``: float32 ``[512]``; updates ``state`` in place; returns P(speech)."""
        x = np.concatenate([state.context, window]).astype(np.float32)[None, :]
        prob, state.recurrent = self._session.run(
            None, {"input": x, "state": state.recurrent, "sr": self._sr})
        state.context = x[0, -CONTEXT_SAMPLES:]
        return float(prob[0, 0])
