"""Tiny synthetic dialogue examples and a tiny student config for the student tests."""

from __future__ import annotations

import dataclasses

import numpy as np

from voxloop.distill.data.dataset import DialogueExample
from voxloop.distill.student.model import StudentConfig
from voxloop.distill.student.pack import PackedData, pack_examples
from voxloop.distill.student.vocab import Tokenizer, build_vocab

ANSWERS = ["Seven plus five is twelve.", "The capital of France is Paris.",
           "Hello! How can I help you today?", "Purple is spelled P, U, R, P, L, E."]
QUESTIONS = ["what is 7 plus 5", "what is the capital of france", "hello", "spell purple"]


def tiny_config(**changes) -> StudentConfig:
    values = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_len=128, dropout=0.0)
    values.update(changes)
    return StudentConfig(**values)


def tiny_examples(n: int = 4, seed: int = 0, split: str = "train") -> list[DialogueExample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        user = rng.integers(0, 1024, (8, int(rng.integers(8, 14)))).astype(np.int16)
        answer = rng.integers(0, 1024, (8, int(rng.integers(5, 9)))).astype(np.int16)
        out.append(DialogueExample(
            id=f"ex{i}", split=split, intent=f"intent{i % len(ANSWERS)}", user_voice="flite:slt",
            prompt_text=QUESTIONS[i % 4], asr_text=QUESTIONS[i % 4],
            answer_text=ANSWERS[i % 4], user_codes=user, answer_codes=answer))
    return out


def tiny_packed(examples: list[DialogueExample]) -> PackedData:
    vocab = build_vocab([e.answer_text for e in examples], [e.asr_text for e in examples],
                        with_domain=False)
    silence = np.full(8, 3, dtype=np.int16)
    return PackedData(pack_examples(examples, Tokenizer(vocab), silence), vocab)


def pointer_packed() -> PackedData:
    """Tiny train and valid examples whose answer words start at made-up, increasing frames
    (an aligned pack)."""
    rng = np.random.default_rng(7)  # answers long enough for a frame per word at least
    examples = [dataclasses.replace(e, answer_codes=rng.integers(
        0, 1024, (8, int(rng.integers(10, 15)))).astype(np.int16))
        for e in tiny_examples(4) + tiny_examples(2, seed=1, split="valid")]
    return with_word_frames(tiny_packed(examples))


def with_word_frames(data: PackedData) -> PackedData:
    """``data`` aligned: its answer words start at made-up, increasing frames."""
    from voxloop.distill.student.align import ordered_starts

    frames = []
    for i in range(len(data)):
        n_words, n_frames = len(data.text(i)), data.answer(i).shape[1]
        frames.append(ordered_starts(np.arange(n_words) * n_frames // n_words, n_frames))
    data.arrays["word_frames"] = data.word_frames = np.concatenate(frames).astype(np.int16)
    return data


def tiny_student_with_mouth(folder):
    """``(model, vocab, saved folder)``: a tiny student whose mouth remembers two answers
    (word ids ``[3, 4, 5]`` at 2, 3, 4 frames and ``[6, 7]`` at 5, 1), saved in ``folder``."""
    import torch

    from voxloop.distill.student.model import Student, save_student

    data = tiny_packed(tiny_examples(4))
    torch.manual_seed(0)
    model = Student(tiny_config(text_vocab=len(data.vocab["text"]),
                                ctc_vocab=len(data.vocab["ctc"]), mouth_d_model=32)).eval()
    model.mouth.set_spelling(data.vocab["text"])
    model.mouth.remember([[3, 4, 5], [6, 7]], [[2, 3, 4], [5, 1]])
    return model, data.vocab, save_student(model, data.vocab, folder)


def answer_turn(model, tokenizer, chunks: list[np.ndarray], options=None):
    """One turn heard in ``chunks`` (user codes ``[K, T]`` each) and answered to the end:
    (the words each step handed out, where it handed any; the row; the frames ``[K, F]``)."""
    from voxloop.distill.student.generate import SamplingOptions, StudentStepper

    stepper = StudentStepper(model, tokenizer, options or SamplingOptions())
    state = stepper.start(1)
    for chunk in chunks:
        stepper.advance(state, [chunk])
    stepper.end_turn(state)
    words, frames = [], []
    while not state.done:
        out = stepper.step(state)
        words += [out.text[0]] if out.text[0] else []
        frames += [] if out.frames[0] is None else [out.frames[0]]
    return words, state.rows[0], np.stack(frames, 1)
