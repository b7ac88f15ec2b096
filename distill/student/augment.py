"""Training-time perturbations of a turn (``Augment``): the user's codes padded, cropped,
noised and blanked, the answer's word starts jittered and its fed-back codes noised, so the
student learns from more than the takes it was given (``pack.make_batch`` applies them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from voxloop.distill.student.layout import audio_id_offsets
from voxloop.distill.student.model import CODEBOOK_SIZE, StudentConfig


@dataclass(frozen=True)
class Augment:
    """Training-time perturbations of the user codes (all off: ``Augment(0, 0, 0, 0, 0, 0)``).
    Frame counts are of 40 ms frames (25 Hz); ``at_rate`` converts them."""

    lead_pad_frames: int = 8  # up to this many silence frames before the speech
    lead_crop_frames: int = 2  # or up to this many leading frames cut
    tail_pad_frames: int = 12  # silence after the speech, as the server's end of turn leaves
    codebook_dropout: float = 0.3  # chance to keep only the first k in [2, K] user codebooks
    frame_dropout: float = 0.05  # chance per frame to blank all its codes
    code_noise: float = 0.02  # chance per code to replace it with a random one
    word_jitter_frames: int = 1  # answer word starts moved by up to this (word pointer)
    answer_code_noise: float = 0.1  # chance per answer code fed back to replace it
    span_mask: float = 0.0  # chance to blank one stretch, up to a third of the frames
    # chance per code to replace it with one of its nearest codes (a row of ``neighbours``
    # [N, k]): the near misses an unseen voice makes, where code_noise draws any code
    neighbour_noise: float = 0.0
    neighbours: np.ndarray | None = dataclasses.field(default=None, compare=False)

    def at_rate(self, frame_rate_hz: float) -> Augment:
        """The same durations in frames of another rate (12.5 Hz: half as many)."""
        if frame_rate_hz == 25.0:
            return self
        scale = frame_rate_hz / 25.0
        return dataclasses.replace(
            self, lead_pad_frames=round(self.lead_pad_frames * scale),
            lead_crop_frames=round(self.lead_crop_frames * scale),
            tail_pad_frames=round(self.tail_pad_frames * scale))


def jitter_words(word_frames: np.ndarray, frames: int, jitter: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Word start frames ``[W]`` each moved by up to ``jitter`` frames, kept increasing and
    inside the answer's ``frames``: a student that generates moves its pointer a frame early
    or late and must still say the right word."""
    from voxloop.distill.student.align import ordered_starts

    if not jitter or len(word_frames) < 2:
        return word_frames
    return ordered_starts(word_frames + rng.integers(-jitter, jitter + 1, len(word_frames)),
                          frames)


def noisy_answer_inputs(config: StudentConfig, ids: np.ndarray, first_audio: int,
                        noise: float, rng: np.random.Generator) -> None:
    """Replace each answer code fed back as input (positions after ``first_audio``, the
    ``<eot>``) by a random code with chance ``noise``, in place; targets stay. Generating,
    the student feeds back its own codes, some wrong: trained only on right ones, one wrong
    code sends the rest of the answer astray (exposure bias)."""
    offsets, fed = audio_id_offsets(config), ids[first_audio + 1:, :config.k_out]
    codes = fed - offsets
    hit = (codes < CODEBOOK_SIZE) & (rng.random(codes.shape) < noise)  # not the specials
    fed[...] = np.where(hit, offsets + rng.integers(0, CODEBOOK_SIZE, codes.shape), fed)


def augment_user(codes: np.ndarray, silence: np.ndarray, aug: Augment,
                 rng: np.random.Generator, null: int = -1,
                 vocab: int = CODEBOOK_SIZE) -> np.ndarray:
    """``codes [K, F]`` -> perturbed codes; ``null`` marks dropped codes (mapped to the
    zero embedding by ``blank_codes``); ``vocab``: codes per codebook (noise draws from
    them). One codebook (semantic tokens) has no codebook dropout."""
    lead = int(rng.integers(-aug.lead_crop_frames, aug.lead_pad_frames + 1))
    tail = int(rng.integers(0, aug.tail_pad_frames + 1))
    sil = silence[:codes.shape[0], None].astype(np.int64)
    codes = codes.astype(np.int64)[:, max(0, -lead):]
    codes = np.concatenate([np.repeat(sil, max(0, lead), 1), codes, np.repeat(sil, tail, 1)], 1)
    if aug.code_noise:
        noisy = rng.random(codes.shape) < aug.code_noise
        codes = np.where(noisy, rng.integers(0, vocab, codes.shape), codes)
    if aug.neighbour_noise and aug.neighbours is not None:  # the tokens, not residual levels
        first = codes[:1]
        near = aug.neighbours[first, rng.integers(0, aug.neighbours.shape[1], first.shape)]
        codes[:1] = np.where(rng.random(first.shape) < aug.neighbour_noise, near, first)
    if rng.random() < aug.codebook_dropout and codes.shape[0] >= 2:
        codes[int(rng.integers(2, codes.shape[0] + 1)):] = null
    if aug.frame_dropout:
        codes[:, rng.random(codes.shape[1]) < aug.frame_dropout] = null
    if aug.span_mask and rng.random() < aug.span_mask:
        n = int(rng.integers(1, max(2, codes.shape[1] // 3 + 1)))
        start = int(rng.integers(0, codes.shape[1] - n + 1))
        codes[:, start:start + n] = null
    return codes


def nearest_codes(vectors: np.ndarray, k: int) -> np.ndarray:
    """Codebook ``vectors [N, D]`` -> the ``k`` nearest other codes of each, nearest first
    (Euclidean) ``[N, k]`` int64."""
    v = torch.as_tensor(np.asarray(vectors, np.float32))
    distance = torch.cdist(v, v)
    distance.fill_diagonal_(float("inf"))
    return distance.topk(k, largest=False).indices.numpy().astype(np.int64)
