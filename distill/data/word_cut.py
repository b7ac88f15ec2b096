"""Where the first words of an utterance end inside it: a cut with the sentence still going.

A person who pauses mid-question ("what is seven ... times three") stops inside one
utterance: the words before the pause keep the pitch and timing of a sentence that goes
on. TTS of those words alone ends them as a finished sentence (a final fall, a
lengthened last syllable), which tells a turn detector the opposite. So the words are
found inside the whole utterance instead: the same voice says the head alone, and
dynamic time warping of its log-mel against the whole one's, anchored at the start and
free at the end, finds the frame of the whole that the head's last frame matches.

Same voice, same words: the spectra line up closely, so no text alignment (and no ASR)
is needed, whatever the voice or backend.
"""

from __future__ import annotations

import numpy as np

HOP_MS = 10  # the log-mel frames the alignment works on


def _features(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """``[T]`` -> per-frame log-mel ``[n, 80]``, each frame centred and scaled to unit
    length (so frames match by spectral shape, not loudness; nothing is taken from the
    utterance as a whole, which differs between the head and the whole)."""
    import torch

    from voxloop.audio import MODEL_RATE_HZ, resample
    from voxloop.codecs.whisper_encoder import whisper_log_mel

    wav = torch.from_numpy(resample(samples, rate_hz, MODEL_RATE_HZ))[None]
    mel = whisper_log_mel(wav)[0].T.numpy().astype(np.float64)  # [n, 80]
    mel -= mel.mean(axis=1, keepdims=True)
    return mel / np.maximum(np.linalg.norm(mel, axis=1, keepdims=True), 1e-6)


def head_end_sample(whole: np.ndarray, head: np.ndarray, rate_hz: int) -> int:
    """The sample of ``whole`` ``[T]`` where the words that ``head`` ``[T']`` says (alone,
    same voice, same rate) end. Both start at their first loud sample.

    Steps (1, 1), (1, 2) and (2, 1) (the head may run at half to twice the whole's pace
    locally); the end is the frame of the whole whose path, anchored at both starts, costs
    least per step.
    """
    a, b = _features(head, rate_hz), _features(whole, rate_hz)
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        return min(len(whole), len(head))
    cost = 1.0 - a @ b.T  # cosine distance [n, m]
    total = np.full((n, m), np.inf)
    steps = np.zeros((n, m))  # path length, for the per-step cost at the free end
    total[0, 0], steps[0, 0] = cost[0, 0], 1
    for i in range(1, n):
        options = [(total[i - 1, :-1], steps[i - 1, :-1], 1, 1),  # (1, 1)
                   (total[i - 1, :-2], steps[i - 1, :-2], 2, 1)]  # (1, 2)
        if i >= 2:
            options.append((total[i - 2, :-1], steps[i - 2, :-1], 1, 2))  # (2, 1)
        best = np.full(m, np.inf)
        length = np.zeros(m)
        for prev, prev_steps, dj, di in options:
            extra = cost[i, dj:] + (cost[i - 1, dj - 1:m - 1] if di == 2 else 0.0)
            candidate = prev + extra
            better = candidate < best[dj:]
            best[dj:] = np.where(better, candidate, best[dj:])
            length[dj:] = np.where(better, prev_steps + di, length[dj:])
        total[i], steps[i] = best, length
    per_step = total[-1] / np.maximum(steps[-1], 1)
    end_frame = int(np.argmin(per_step))
    return min(len(whole), round((end_frame + 1) * HOP_MS * rate_hz / 1000))
