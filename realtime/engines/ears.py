"""How a native session hears: the user's 16 kHz audio -> the student's user frames.

An ear is one session's streaming state over weights every session shares:

- :class:`CodecEar`: the acoustic codec's streaming encoder, codes ``[K_in, T]`` frame by
  frame (a student that hears codec codes, as the bundled one does);
- :class:`SemanticEar`: the semantic tokenizer's stream, tokens ``[1, T]`` a block (1 s)
  at a time while the user speaks (a semantic student; ``[L, T]`` with residual levels).

    frames = ear.push(audio_16k)   # [K, T] the audio completes (T may be 0)
    tail = ear.tentative()         # None, or a callable: the frames a flush would add now,
                                   # computed later on a copy (the stream goes on)
    frames = ear.flush()           # the end of the turn: the last frames; the stream ends

:class:`ShiftedEar` wraps either to hear the turn from a few ms in: the same speech on
another alignment of the ear's frames (the engine's ``votes``).

``push`` runs in the session's worker thread; ``tentative`` is cheap (the event loop
calls it at a pause: a snapshot of the stream) and its callable runs on the batcher's tail
threads at once; the model thread prefills its frames after those already queued, so a
speculative answer starts with every token of the turn so far.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from voxloop.audio import MODEL_RATE_HZ, StreamingResampler
from voxloop.distill.student.user_tokens import as_frames


class CodecEar:
    """The acoustic codec's streaming encoder on one session's audio."""

    def __init__(self, codec, k_in: int) -> None:
        self.codec, self.k_in = codec, k_in
        self.encoder = codec.stream_encoder(1)
        self.downsample = None
        if codec.sample_rate != MODEL_RATE_HZ:  # a codec at another rate (EnCodec: 24 kHz)
            self.downsample = StreamingResampler(MODEL_RATE_HZ, codec.sample_rate)
        self.pending = np.zeros(0, np.float32)  # codec-rate samples short of a whole frame
        self.heard_samples = 0

    def push(self, audio_16k: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio_16k, np.float32)
        self.heard_samples += len(audio)
        if self.downsample is not None:
            audio = self.downsample.push(audio)
        samples = np.concatenate([self.pending, audio])
        whole = len(samples) - len(samples) % self.codec.hop  # the encoder only ever emits
        self.pending = samples[whole:]  # whole frames: push those, fewer calls
        if not whole:
            return self._empty()
        return self._codes(self.encoder.push(torch.from_numpy(samples[:whole])[None, None]))

    def tentative(self) -> Callable[[], np.ndarray] | None:
        return None  # a speculative answer hears the whole frames so far

    def flush(self) -> np.ndarray:
        last = self.encoder.push(torch.from_numpy(self.pending)[None, None])
        self.pending = self.pending[:0]
        return np.concatenate([self._codes(last), self._codes(self.encoder.flush())], axis=1)

    def _codes(self, codes: torch.Tensor) -> np.ndarray:
        return codes[0, :self.k_in].numpy()

    def _empty(self) -> np.ndarray:
        return np.zeros((self.k_in, 0), np.int64)


class SemanticEar:
    """The semantic tokenizer's stream on one session's audio (explicit state)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.state = tokenizer.init_state(1)
        self.heard_samples = 0
        self.finished = False

    def push(self, audio_16k: np.ndarray) -> np.ndarray:
        if self.finished or not len(audio_16k):  # audio after the end of the turn: unheard
            return self._empty()
        self.heard_samples += len(audio_16k)
        wav = torch.from_numpy(np.asarray(audio_16k, np.float32))[None]
        return as_frames(self.tokenizer.step(self.state, wav).numpy())

    def tentative(self) -> Callable[[], np.ndarray] | None:
        """The tokens of the partial block as a flush would give them now, on a copy of the
        state (the stream's fields are replaced, never changed in place, so a shallow copy
        is a snapshot): the real stream goes on and may still change that block."""
        if self.finished or not self.heard_samples:
            return None
        snapshot = copy.copy(self.state)
        snapshot.encoder = copy.copy(self.state.encoder)
        return lambda: as_frames(self.tokenizer.flush(snapshot).numpy())

    def flush(self) -> np.ndarray:
        if self.finished:
            return self._empty()
        self.finished = True
        return as_frames(self.tokenizer.flush(self.state).numpy())

    def _empty(self) -> np.ndarray:
        return np.zeros((self.tokenizer.levels, 0), np.int64)


class ShiftedEar:
    """An ear that skips the turn's first ``skip_samples``: its frames fall on another
    alignment with the speech than the unshifted ear's (a fraction of a frame apart), so
    the student hears the same words through other tokens."""

    def __init__(self, ear: CodecEar | SemanticEar, skip_samples: int) -> None:
        self.ear, self.to_skip = ear, skip_samples
        self.heard_samples = 0

    def push(self, audio_16k: np.ndarray) -> np.ndarray:
        self.heard_samples += len(audio_16k)
        skip = min(self.to_skip, len(audio_16k))
        self.to_skip -= skip
        return self.ear.push(audio_16k[skip:])

    def tentative(self) -> Callable[[], np.ndarray] | None:
        return self.ear.tentative()

    def flush(self) -> np.ndarray:
        return self.ear.flush()
