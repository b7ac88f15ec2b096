"""Train a student's audio intents head (:mod:`audio_intents`) on its own pack.

The turns are the pack's train split (the user's codes as the student heard them, and
the intent each asked), plus, spoken by training voices and tokenized by the student's
ears, the domain's more phrasings and templates (which no pack asks: the words head reads
them, so the sound's head hears them too) and its questions outside it, as the refusal.
Every intent is drawn as often (the
arithmetic kinds have 20 times the turns of a fixed answer). Frames are corrupted as the
ears err: random codes for a share of frames and for one span. Measured once trained, on
the pack's valid split (trained phrasings, other takes), on the more phrasings kept out
(every 4th of an intent: phrasings it never heard, unless the pack was built with
``--more-phrasings``) and on the outside questions kept out
(every 4th): how often this head alone names the refusal (a pack built with
``--outside-questions`` trained on those too, so there the share reads high).

    student, vocab = load_student("models/voxloop-student")
    head, report = train_audio_intents(student, vocab, settings)   # ~20 min on one thread
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from voxloop.distill.student.audio_intents import AudioIntents, head_config
from voxloop.distill.student.config import AudioIntentsTrainSettings
from voxloop.distill.teachers.domain.data import FALLBACK_INTENT, load_domain
from voxloop.errors import VoxloopError

KEPT_OUT = 4  # every 4th outside question and more phrasing of an intent: measured


@dataclass
class Turns:
    """Turns' user codes ``[K, sum T_i]`` cut at ``offsets [N + 1]``, their intents and
    splits ``[N]``."""

    codes: np.ndarray
    offsets: np.ndarray
    intents: np.ndarray
    splits: np.ndarray

    def codes_of(self, i: int) -> np.ndarray:
        return self.codes[:, self.offsets[i]:self.offsets[i + 1]]

    def where(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)


def pack_turns(path: str, k_in: int, user_vocab: int) -> Turns:
    """The pack's turns (read as every pack is read: ``PackedData.load`` refuses a missing
    file or one that is no pack); refuses one with fewer levels or other codes than the
    student hears."""
    from voxloop.distill.student.pack import PackedData

    pack = PackedData.load(path)
    if pack.user_codes.shape[0] < k_in:
        raise VoxloopError(f"{path} holds {pack.user_codes.shape[0]} levels of user codes; "
                           f"the student hears {k_in}: pack it with the student's residual "
                           "levels")
    codes = pack.user_codes[:k_in].astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= user_vocab):
        raise VoxloopError(f"{path} holds user codes outside 0..{user_vocab - 1}: it was "
                           "packed through other ears than the student's")
    return Turns(codes, pack.user_offsets, pack.intent, pack.split)


def outside_turns(student, vocab: dict, per_question: int, seed: int) -> Turns:
    """The domain's outside questions, each said by ``per_question`` training voices and
    tokenized as the student hears; every ``KEPT_OUT``-th question's split is ``outside``
    (measured, not trained)."""
    asked = [(question, FALLBACK_INTENT, "outside" if i % KEPT_OUT == KEPT_OUT - 1 else "train")
             for i, question in enumerate(load_domain()["outside_questions"])]
    return spoken_turns(student, vocab, asked, per_question, seed, "outside questions")


def more_turns(student, vocab: dict, per_question: int, seed: int) -> Turns:
    """The domain's more phrasings and templates (``more_questions``) each said by
    ``per_question`` training voices."""
    return spoken_turns(student, vocab, more_questions(seed), per_question, seed + 1,
                        "more phrasings")


def more_questions(seed: int) -> list[tuple[str, str, str]]:
    """``(question, intent, split)`` of the domain's more phrasings and templates (two slot
    fillings each), which no pack asks; every ``KEPT_OUT``-th of an intent is
    ``more_valid`` (phrasings the head never trains on: measured), the rest ``train``."""
    from voxloop.distill.teachers.domain.data import examples

    domain = load_domain()
    main = {i["id"]: len(i["phrasings"]) for i in domain["intents"]}
    main |= {i["id"]: len(i["templates"]) for i in domain["compositional"]}
    return [(e.text, e.intent,
             "more_valid" if (e.template - main[e.intent]) % KEPT_OUT == KEPT_OUT - 1
             else "train")
            for e in examples(2, seed, more=1_000) if e.template >= main[e.intent]]


def spoken_turns(student, vocab: dict, asked: list[tuple[str, str, str]], per_question: int,
                 seed: int, desc: str) -> Turns:
    """``asked`` (question, intent, split) each said by ``per_question`` training voices
    (drawn as the datasets draw them, augmented as they are) and tokenized as the student
    hears."""
    from voxloop.distill.data.augment import spoken
    from voxloop.distill.data.plan import (
        SynthSettings,
        training_voices,
        user_voices,
        voice_weights,
    )
    from voxloop.distill.student.user_tokens import encode_clips, load_student_semantic

    rng = np.random.default_rng(seed)
    ears = load_student_semantic(None, vocab, student)
    voices = training_voices(user_voices(SynthSettings()))
    weights = voice_weights(voices)
    codes, intents, splits = [], [], []
    for question, intent, split in tqdm(asked, desc=desc, unit="question"):
        for _ in range(per_question):
            clip = spoken(question, str(rng.choice(voices, p=weights)), rng)
            tokens = encode_clips(ears, [clip])[0]
            codes.append(tokens.reshape(-1, tokens.shape[-1]))
            intents.append(intent)
            splits.append(split)
    offsets = np.cumsum([0] + [c.shape[1] for c in codes])
    return Turns(np.concatenate(codes, 1), offsets, np.array(intents), np.array(splits))


def joined(a: Turns, b: Turns) -> Turns:
    return Turns(np.concatenate([a.codes, b.codes], 1),
                 np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
                 np.concatenate([a.intents, b.intents]), np.concatenate([a.splits, b.splits]))


def batch(turns: Turns, rows: np.ndarray, settings: AudioIntentsTrainSettings,
          rng: np.random.Generator | None, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes [B, K, T], mask [B, T])`` of ``rows``, corrupted where ``rng`` is given."""
    seqs = [turns.codes_of(int(i)).copy() for i in rows]
    if rng is not None:
        for codes in seqs:
            frames = codes.shape[1]
            noisy = rng.random(frames) < settings.token_noise
            codes[:, noisy] = rng.integers(0, vocab_size, (codes.shape[0], int(noisy.sum())))
            if rng.random() < 0.5 and frames > 10:
                span = int(rng.integers(1, max(2, int(settings.mask * frames))))
                start = int(rng.integers(0, frames - span))
                codes[:, start:start + span] = rng.integers(0, vocab_size, (codes.shape[0], span))
    width = max(c.shape[1] for c in seqs)
    out = np.zeros((len(seqs), seqs[0].shape[0], width), np.int64)
    mask = np.zeros((len(seqs), width), bool)
    for b, codes in enumerate(seqs):
        out[b, :, :codes.shape[1]], mask[b, :codes.shape[1]] = codes, True
    return torch.from_numpy(out), torch.from_numpy(mask)


@torch.inference_mode()
def accuracy(head: AudioIntents, turns: Turns, rows: np.ndarray, settings) -> float:
    """Share of ``rows`` whose likeliest label is the intent asked (nan: no rows)."""
    if not len(rows):
        return float("nan")
    labels, right = head.config.labels, 0
    for start in range(0, len(rows), 128):
        part = rows[start:start + 128]
        codes, mask = batch(turns, part, settings, None, head.config.user_vocab)
        best = head(codes, mask).argmax(-1).tolist()
        right += sum(labels[b] == turns.intents[i] for b, i in zip(best, part, strict=True))
    return right / len(rows)


def check_settings(student, settings: AudioIntentsTrainSettings) -> None:
    """Refuse, before any work, settings or a student the head cannot be trained with."""
    if student.config.user_input != "semantic":
        raise VoxloopError("an audio intents head reads a semantic student's tokens; this "
                           f"student hears {student.config.user_input!r}")
    whole = {"--steps": settings.steps, "--batch-size": settings.batch_size,
             "--threads": settings.threads, "--width": settings.width,
             "--layers": settings.layers}
    for flag, value in whole.items():
        if value < 1:
            raise VoxloopError(f"{flag} {value}: must be at least 1")
    if settings.kernel < 1 or settings.kernel % 2 == 0:
        raise VoxloopError(f"--kernel {settings.kernel}: must be odd (centred on its frame)")
    for flag, value in (("--token-noise", settings.token_noise), ("--mask", settings.mask)):
        if not 0.0 <= value <= 1.0:
            raise VoxloopError(f"{flag} {value}: a share, from 0 to 1")
    for flag, value in (("--outside-per-question", settings.outside_per_question),
                        ("--more-per-phrasing", settings.more_per_phrasing)):
        if value < 0:
            raise VoxloopError(f"{flag} {value}: 0 or more")


def train_audio_intents(student, vocab: dict, settings: AudioIntentsTrainSettings
                        ) -> tuple[AudioIntents, dict]:
    """A head trained for ``student`` and what was measured (valid accuracy, the share of
    kept-out outside questions refused)."""
    check_settings(student, settings)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    turns = pack_turns(settings.data, student.config.k_in, student.config.user_vocab)
    if settings.outside_per_question:
        turns = joined(turns, outside_turns(student, vocab, settings.outside_per_question,
                                            settings.seed))
    if settings.more_per_phrasing:
        turns = joined(turns, more_turns(student, vocab, settings.more_per_phrasing,
                                         settings.seed))
    train = turns.where("train")
    if not len(train):
        raise VoxloopError(f"{settings.data} has no train split to learn from")
    labels = sorted(set(turns.intents[train]))
    by_label = {label: train[turns.intents[train] == label] for label in labels}
    target = {label: i for i, label in enumerate(labels)}
    head = AudioIntents(head_config(student, labels, width=settings.width,
                                    layers=settings.layers, kernel=settings.kernel),
                        student.user_codebooks)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr,
                                                   total_steps=settings.steps + 1, pct_start=0.05)
    head.train()
    bar = tqdm(range(settings.steps), desc="audio intents", unit="step")
    for _ in bar:
        asked = rng.choice(labels, settings.batch_size)
        rows = np.array([rng.choice(by_label[label]) for label in asked])
        codes, mask = batch(turns, rows, settings, rng, head.config.user_vocab)
        y = torch.tensor([target[label] for label in asked])
        loss = torch.nn.functional.cross_entropy(head(codes, mask), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    head.eval()
    # the refused share is this head's likeliest label alone, before the words are read
    report = {"labels": len(labels), "train_turns": len(train),
              "valid_accuracy": accuracy(head, turns, turns.where("valid"), settings),
              "more_valid_accuracy": accuracy(head, turns, turns.where("more_valid"),
                                              settings),
              "outside_refused": accuracy(head, turns, turns.where("outside"), settings)}
    return head, report
