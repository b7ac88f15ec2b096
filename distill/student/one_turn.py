"""One user turn answered offline: the streaming stepper run start to end (evaluations,
tests, the command line).

    gen = generate(model, tokenizer, user_codes)   # [K, F_user] -> Generation
    gen.text, gen.codes                            # its words, its frames [K_out, F]
    gen.heard                                      # the user's words, as its CTC head heard them
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from voxloop.distill.student.generate import SamplingOptions, StudentStepper
from voxloop.distill.student.model import Student
from voxloop.distill.student.vocab import Tokenizer


@dataclass
class Generation:
    """One answer: ``codes [K_out, F]``, its words (and their log-probability: how sure
    the student is of them), what it heard the user say (its CTC head, greedy: what the
    native engine reports as the user's transcript), and timings (seconds, steps)."""

    codes: np.ndarray
    text_ids: list[int]
    text: str
    text_logprob: float
    n_steps: int
    prefill_s: float
    generate_s: float
    first_frame_s: float | None
    heard: str = ""


def generate(model: Student, tokenizer: Tokenizer, user_codes: np.ndarray,
             options: SamplingOptions | None = None, chunk_frames: int = 0) -> Generation:
    """Answer one user turn ``[K, F_user]``; prefill in chunks of ``chunk_frames`` (0: at once).
    A turn of no frame is answered with nothing, as the engine ends it (``Reason.EMPTY``)."""
    if not user_codes.shape[1]:
        return Generation(np.zeros((model.config.k_out, 0), np.int64), [], "", 0.0, 0,
                          0.0, 0.0, None)
    stepper = StudentStepper(model, tokenizer, options or SamplingOptions())
    state = stepper.start(1)
    t0 = time.perf_counter()
    step = chunk_frames or max(1, user_codes.shape[1])
    for start in range(0, user_codes.shape[1], step):  # a prefill that reads the CTC head
        stepper.advance(state, [user_codes[:, start:start + step]])
    stepper.end_turn(state)
    t1 = time.perf_counter()
    frames, n_steps, first = [], 0, None
    while not state.done:
        out = stepper.step(state)
        n_steps += 1
        if out.frames[0] is not None:
            frames.append(out.frames[0])
            first = first if first is not None else time.perf_counter() - t1
    t2 = time.perf_counter()
    row = state.rows[0].turn
    codes = np.stack(frames, 1) if frames else np.zeros((model.config.k_out, 0), np.int64)
    return Generation(codes, row.text, tokenizer.decode_answer(row.text), row.text_logprob, n_steps,
                      t1 - t0, t2 - t1, first, tokenizer.decode_ctc(row.heard))
