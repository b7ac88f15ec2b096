"""The student's frame layout: where a turn's user frames, answer words and delayed audio
steps sit in one token sequence, and the embedding ids of each.

Every position carries ``C = config.channels`` input ids (``max(K_in, K_out)``, two more
with the word pointer; unused ones ``null_id``).
The user frames are a prefix with a rate of their own (``user_frame_rate_hz``: the
codec's 25 Hz, or the semantic tokenizer's 25 or 12.5 Hz); the answer's audio steps
run at the acoustic codec's rate.

Layout of one turn (``T = F_user + n_text + S + 1`` positions, ``S`` audio steps):

    position   0 .. F_user-1   F_user   +1 .. +n_text   next    then S - 1 positions
    input      user frame f    <sep>    answer word i   <eot>   delayed audio step s
    predicts   (CTC of text1)  word 1   word i+1/<eot>  step 0  step s+1

Delay pattern over ``K_out`` codebooks: at step ``s`` codebook ``k`` holds code
``A[k, s-k]`` of answer frame ``s-k``; before a codebook starts and after it
ends it holds ``AUDIO_SPECIAL``. Codebook 0 outputs ``AUDIO_SPECIAL`` (EOS) at
step ``F``; the other codebooks finish frame ``F-1`` by step ``F+K_out-2``.

Word pointer (``config.word_pointer``): the position that predicts step ``s`` (``<eot>``
for step 0) also carries, on channel ``config.pointer_channel``, the answer word that frame
``s`` belongs to (word ``i`` owns frames ``word_frames[i] .. word_frames[i+1] - 1``; word 0
also owns the leading silence, the last word the tail), on ``config.word_frame_channel``
how many frames into that word frame ``s`` is (``s - word_frames[i]``, at most
``WORD_FRAMES_MAX - 1``), and predicts whether frame ``s + 1`` starts the next word (the
``boundary`` target). Generating, the pointer moves on when the model says so: the steps
are told which word they are saying and where in it, as a duration-driven TTS is, instead
of finding their place in the sentence by attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxloop.distill.student.config import WORD_FRAMES_MAX
from voxloop.distill.student.model import AUDIO_SPECIAL, CODEBOOK_SIZE, StudentConfig
from voxloop.distill.student.vocab import EOT, SEP

IGNORE = -100  # target of a position that predicts nothing


def user_frame_ids(config: StudentConfig, codes: np.ndarray) -> np.ndarray:
    """User codes ``[K, T]`` (semantic: ``[1, T]`` tokens) -> embedding ids ``[T, C]``
    (``C = config.channels``; codebooks beyond K_in unused, channels beyond them null)."""
    k = config.k_in
    out = np.full((codes.shape[1], config.channels), config.null_id, dtype=np.int64)
    out[:, :k] = (codes[:k].T.astype(np.int64) + config.user_offset
                  + config.user_vocab * np.arange(k)[None, :])
    return out


def text_token_ids(config: StudentConfig, tokens: np.ndarray) -> np.ndarray:
    """Text ids ``[T]`` -> embedding ids ``[T, C]`` (channel 0 only)."""
    out = np.full((len(tokens), config.channels), config.null_id, dtype=np.int64)
    out[:, 0] = config.text_offset + np.asarray(tokens, dtype=np.int64)
    return out


def audio_id_offsets(config: StudentConfig) -> np.ndarray:
    """The embedding id of code 0 in each answer codebook ``[K_out]``: code ``c`` of
    codebook ``k`` (or AUDIO_SPECIAL) enters as ``offsets[k] + c``."""
    return config.audio_offset + (CODEBOOK_SIZE + 1) * np.arange(config.k_out)


def audio_step_ids(config: StudentConfig, steps: np.ndarray) -> np.ndarray:
    """Delayed audio steps ``[T, K_out]`` (codes or AUDIO_SPECIAL) -> ids ``[T, C]``."""
    out = np.full((len(steps), config.channels), config.null_id, dtype=np.int64)
    out[:, :config.k_out] = steps + audio_id_offsets(config)[None, :]
    return out


def delay(codes: np.ndarray, k_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Answer codes ``[K, F]`` -> delayed steps ``[S, K_out]`` and which of them are
    targets (``[S, K_out]`` bool)."""
    frames = codes.shape[1]
    n_steps = max(frames + k_out - 1, frames + 1)
    steps = np.full((n_steps, k_out), AUDIO_SPECIAL, dtype=np.int64)
    valid = np.zeros((n_steps, k_out), dtype=bool)
    for k in range(k_out):
        steps[k:k + frames, k] = codes[k]
        valid[k:k + frames, k] = True
    valid[frames, 0] = True  # EOS
    return steps, valid


def undelay(steps: np.ndarray, k_out: int) -> np.ndarray:
    """Delayed steps ``[S, K_out]`` -> the frames complete in them ``[K_out, S - K_out + 1]``."""
    frames = steps.shape[0] - k_out + 1
    return np.stack([steps[k:k + frames, k] for k in range(k_out)]) if frames > 0 else \
        np.zeros((k_out, 0), dtype=np.int64)


def with_word(config: StudentConfig, ids: np.ndarray, word: int | np.ndarray | None,
              frame: int | np.ndarray = 0) -> np.ndarray:
    """``ids [..., C]`` with the pointer channels set: answer word ``word`` (text ids; None:
    no word, as an answer without words has) and ``frame``, the frame within it."""
    if word is not None:
        ids[..., config.pointer_channel] = config.text_offset + np.asarray(word, dtype=np.int64)
        ids[..., config.word_frame_channel] = np.minimum(frame, WORD_FRAMES_MAX - 1)
    return ids


def word_pointer(word_frames: np.ndarray, n_steps: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start frames of the words ``[W]`` -> for each step's frame ``[n_steps]``: its word,
    how many frames into that word it is, and whether the next frame starts a word (bool)."""
    s = np.arange(n_steps)
    pointer = np.clip(np.searchsorted(word_frames, s, side="right") - 1, 0, None)
    boundary = np.isin(s + 1, word_frames[1:])
    return pointer, s - word_frames[pointer], boundary


@dataclass
class Sequence:
    """One training turn: ``ids [T, C]``, ``text_target [T]``, ``audio_target [T, K_out]``,
    ``boundary_target [T]`` (1: the next frame starts a word; IGNORE where nothing is
    predicted), ``ctc_target [n]`` over the first ``n_user`` positions."""

    ids: np.ndarray
    text_target: np.ndarray
    audio_target: np.ndarray
    boundary_target: np.ndarray
    ctc_target: np.ndarray
    n_user: int

    def words_only(self, n_text: int) -> Sequence:
        """The turn up to its last answer word (the position that predicts ``<eot>``): what
        a student that speaks with its mouth still learns (ears and words), no audio step."""
        end = self.n_user + n_text + 1
        return Sequence(self.ids[:end], self.text_target[:end], self.audio_target[:end],
                        self.boundary_target[:end], self.ctc_target, self.n_user)


def build_sequence(config: StudentConfig, user_codes: np.ndarray, text: np.ndarray,
                   answer_codes: np.ndarray, ctc: np.ndarray,
                   word_frames: np.ndarray | None = None, words_only: bool = False) -> Sequence:
    """One turn's sequence; ``word_frames [len(text)]`` (start frame of each answer word)
    is needed by a word-pointer student, unless ``words_only``: the turn cut after its
    answer's words (``Sequence.words_only``), which has no audio step to point from."""
    n_user, n_text = user_codes.shape[1], len(text)
    steps, valid = delay(answer_codes[:config.k_out], config.k_out)
    ids = np.concatenate([
        user_frame_ids(config, user_codes),
        text_token_ids(config, np.concatenate([[SEP], text, [EOT]])),
        audio_step_ids(config, steps[:-1]),
    ])
    first_audio = n_user + n_text + 1  # <eot>: predicts step 0
    text_target = np.full(len(ids), IGNORE, dtype=np.int64)
    text_target[n_user:first_audio] = np.concatenate([text, [EOT]])
    audio_target = np.full((len(ids), config.k_out), IGNORE, dtype=np.int64)
    audio_target[first_audio:] = np.where(valid, steps, IGNORE)
    boundary_target = np.full(len(ids), IGNORE, dtype=np.int64)
    if words_only:
        return Sequence(ids, text_target, audio_target, boundary_target,
                        np.asarray(ctc, dtype=np.int64), n_user).words_only(n_text)
    if config.word_pointer and n_text:
        if word_frames is None or len(word_frames) != n_text:
            raise ValueError("a word-pointer student needs the start frame of every answer "
                             "word (voxloop distill align)")
        pointer, frame, boundary = word_pointer(np.asarray(word_frames, dtype=np.int64),
                                                len(steps))
        with_word(config, ids[first_audio:], text[pointer], frame)
        frames = answer_codes.shape[1]  # the boundary after the last frame means nothing
        boundary_target[first_audio:first_audio + frames] = boundary[:frames]
    return Sequence(ids, text_target, audio_target, boundary_target,
                    np.asarray(ctc, dtype=np.int64), n_user)
