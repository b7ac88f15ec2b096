"""From dialogue examples to the student's token sequences (``layout``), and batches of them.

``PackedData`` keeps a whole split in a few flat numpy arrays (the codes-only
export that travels to a GPU machine as one ``.npz``).

Targets: ``teacher`` (the default) trains on what the cascade said, ``intended``
on what the prompt asked for (``voxloop.distill.data.targets``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxloop.distill.student.config import TARGETS
from voxloop.distill.student.layout import (
    IGNORE,
    Sequence,
    build_sequence,
)
from voxloop.distill.student.model import CODEBOOK_SIZE, StudentConfig
from voxloop.training import atomic_write


@dataclass(frozen=True)
class Augment:
    """Training-time perturbations of the user codes (all off: ``Augment(0, 0, 0, 0, 0, 0)``)."""

    lead_pad_frames: int = 8  # up to this many silence frames before the speech
    lead_crop_frames: int = 2  # or up to this many leading frames cut
    tail_pad_frames: int = 12  # silence after the speech, as the server's end of turn leaves
    codebook_dropout: float = 0.3  # chance to keep only the first k in [2, K] user codebooks
    frame_dropout: float = 0.05  # chance per frame to blank all its codes
    code_noise: float = 0.02  # chance per code to replace it with a random one


def augment_user(codes: np.ndarray, silence: np.ndarray, aug: Augment,
                 rng: np.random.Generator, null: int = -1) -> np.ndarray:
    """``codes [K, F]`` -> perturbed codes; ``null`` marks dropped codes (mapped to the
    zero embedding by ``blank_codes``)."""
    lead = int(rng.integers(-aug.lead_crop_frames, aug.lead_pad_frames + 1))
    tail = int(rng.integers(0, aug.tail_pad_frames + 1))
    sil = silence[:, None].astype(np.int64)
    codes = codes.astype(np.int64)[:, max(0, -lead):]
    codes = np.concatenate([np.repeat(sil, max(0, lead), 1), codes, np.repeat(sil, tail, 1)], 1)
    if aug.code_noise:
        noisy = rng.random(codes.shape) < aug.code_noise
        codes = np.where(noisy, rng.integers(0, CODEBOOK_SIZE, codes.shape), codes)
    if rng.random() < aug.codebook_dropout:
        codes[int(rng.integers(2, codes.shape[0] + 1)):] = null
    if aug.frame_dropout:
        codes[:, rng.random(codes.shape[1]) < aug.frame_dropout] = null
    return codes


class PackedData:
    """Examples as flat arrays: codes concatenated over examples, with offsets."""

    ARRAYS = ("user_codes", "user_offsets", "answer_codes", "answer_offsets", "text_ids",
              "text_offsets", "ctc_ids", "ctc_offsets", "split", "id", "intent", "user_voice",
              "asr_text", "answer_text", "prompt_text", "silence_codes", "teacher_text",
              "intended_text")

    def __init__(self, arrays: dict[str, np.ndarray], vocab: dict) -> None:
        arrays = {"teacher_text": arrays["answer_text"],  # packs made before these existed
                  "intended_text": np.full(len(arrays["id"]), ""), **arrays}
        self.arrays, self.vocab = arrays, vocab
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])

    def __len__(self) -> int:
        return len(self.id)

    def user(self, i: int) -> np.ndarray:
        return self.user_codes[:, self.user_offsets[i]:self.user_offsets[i + 1]]

    def answer(self, i: int) -> np.ndarray:
        return self.answer_codes[:, self.answer_offsets[i]:self.answer_offsets[i + 1]]

    def text(self, i: int) -> np.ndarray:
        return self.text_ids[self.text_offsets[i]:self.text_offsets[i + 1]].astype(np.int64)

    def ctc(self, i: int) -> np.ndarray:
        return self.ctc_ids[self.ctc_offsets[i]:self.ctc_offsets[i + 1]].astype(np.int64)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy would append ".npz" to a name
                np.savez_compressed(f, vocab=np.array(json.dumps(self.vocab)), **self.arrays)

        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> PackedData:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in cls.ARRAYS if k in z.files}
            vocab = json.loads(str(z["vocab"]))
        return cls(arrays, vocab)


def pack_examples(examples, tokenizer, silence_codes: np.ndarray,
                  answer_codebooks: int = 8) -> dict[str, np.ndarray]:
    """``DialogueExample``s -> the arrays of ``PackedData``."""
    examples = list(examples)

    def offsets(lengths):
        return np.concatenate([[0], np.cumsum(list(lengths))]).astype(np.int64)

    users = [np.asarray(e.user_codes, dtype=np.int16) for e in examples]
    answers = [np.asarray(e.answer_codes, dtype=np.int16)[:answer_codebooks] for e in examples]
    texts = [np.asarray(tokenizer.encode_answer(e.answer_text), np.int16) for e in examples]
    ctcs = [np.asarray(tokenizer.encode_transcript(e.asr_text), np.int16) for e in examples]
    return {
        "user_codes": np.concatenate(users, 1),
        "user_offsets": offsets([u.shape[1] for u in users]),
        "answer_codes": np.concatenate(answers, 1),
        "answer_offsets": offsets([a.shape[1] for a in answers]),
        "text_ids": np.concatenate(texts), "text_offsets": offsets(map(len, texts)),
        "ctc_ids": np.concatenate(ctcs), "ctc_offsets": offsets(map(len, ctcs)),
        **{name: np.array([str(getattr(e, name)) for e in examples]) for name in
           ("split", "id", "intent", "user_voice", "asr_text", "answer_text", "prompt_text")},
        "teacher_text": np.array([str(e.meta.get("teacher_text", e.answer_text))
                                  for e in examples]),
        "intended_text": np.array([str(e.meta.get("prompt_answer", "")) for e in examples]),
        "silence_codes": np.asarray(silence_codes, dtype=np.int16),
    }


@dataclass
class Batch:
    """Right-padded: ``ids [B, T, K_in]``, ``text_target [B, T]``, ``audio_target [B, T, K_out]``,
    ``ctc_target [B, L]`` with ``ctc_lengths [B]``, ``n_user [B]``."""

    ids: torch.Tensor
    text_target: torch.Tensor
    audio_target: torch.Tensor
    ctc_target: torch.Tensor
    ctc_lengths: torch.Tensor
    n_user: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def collate(config: StudentConfig, seqs: list[Sequence]) -> Batch:
    length = max(len(s.ids) for s in seqs)
    ctc_len = max(1, max(len(s.ctc_target) for s in seqs))
    b = len(seqs)
    ids = np.full((b, length, config.k_in), config.null_id, dtype=np.int64)
    text = np.full((b, length), IGNORE, dtype=np.int64)
    audio = np.full((b, length, config.k_out), IGNORE, dtype=np.int64)
    ctc = np.zeros((b, ctc_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        n = len(s.ids)
        ids[i, :n], text[i, :n], audio[i, :n] = s.ids, s.text_target, s.audio_target
        ctc[i, :len(s.ctc_target)] = s.ctc_target
    return Batch(*(torch.from_numpy(a) for a in (ids, text, audio, ctc)),
                 torch.tensor([len(s.ctc_target) for s in seqs]),
                 torch.tensor([s.n_user for s in seqs]))


def make_batch(config: StudentConfig, data: PackedData, rows: np.ndarray,
               aug: Augment | None, rng: np.random.Generator) -> Batch:
    """Sequences of examples ``rows`` (user codes perturbed by ``aug`` if given)."""
    seqs = []
    for i in rows:
        user = data.user(i)
        if aug is not None:
            user = augment_user(user, data.silence_codes, aug, rng)
        seq = build_sequence(config, np.maximum(user, 0), data.text(i), data.answer(i), data.ctc(i))
        if aug is not None:  # dropped user codes -> the zero (null) embedding
            seq.ids[:user.shape[1], :config.k_in][user[:config.k_in].T < 0] = config.null_id
        seqs.append(seq)
    return collate(config, seqs)


def silence_codes(codec) -> np.ndarray:
    """The codes ``[K]`` the codec gives to a steady stretch of silence."""
    wav = torch.zeros(1, 1, codec.sample_rate)
    with torch.no_grad():
        codes = codec.encode(wav)[0]  # [K, F]
    return codes[:, codes.shape[1] // 2].numpy().astype(np.int16)


def pack_dataset(folder: str | Path, out: str | Path, answer_codebooks: int = 8,
                 vocab: dict | None = None, valid_every: int = 0,
                 targets: str = "teacher", corpus: str | Path | None = None) -> Path:
    """A dataset folder (``voxloop distill synth``) -> one codes-only ``.npz`` for training.

    The vocabularies are ``vocab`` (a trained model's) or built from the training
    split and the domain. ``valid_every`` N > 0: while the dataset has no valid
    turns yet (a partial build), every Nth training turn becomes a valid turn.
    ``targets``: ``teacher`` or ``intended`` (``voxloop.distill.data.targets``); ``corpus``:
    also train on the questions of this codec corpus (``corpus_turns``; intended only).
    """
    from voxloop.codecs.registry import load_codec
    from voxloop.distill.data.dataset import iter_examples, load_manifest
    from voxloop.distill.student.vocab import Tokenizer, build_vocab
    from voxloop.errors import VoxloopError

    if targets not in TARGETS:
        raise VoxloopError(f"targets must be one of {TARGETS}, not {targets!r}")
    if corpus and targets != "intended":
        raise VoxloopError("corpus turns have no teacher answer: use them with intended targets")
    manifest = load_manifest(folder)
    examples = list(iter_examples(folder))
    if targets == "intended":
        from voxloop.distill.data.targets import AnswerCodes, corpus_turns, intended_targets

        answers = AnswerCodes(folder, manifest["codec"]["name"], examples)
        examples = intended_targets(examples, answers)
        if corpus:
            examples += corpus_turns(corpus, answers)
    if valid_every and not any(e.split == "valid" for e in examples):
        train_ids = [i for i, e in enumerate(examples) if e.split == "train"]
        for i in train_ids[::valid_every]:
            examples[i] = dataclasses.replace(examples[i], split="valid")
    train = [e for e in examples if e.split == "train"]
    if vocab is None:
        vocab = build_vocab([e.answer_text for e in train], [e.asr_text for e in train])
    vocab = {"text": vocab["text"], "ctc": vocab["ctc"]}
    silence = silence_codes(load_codec(manifest["codec"]["name"]))
    arrays = pack_examples(examples, Tokenizer(vocab), silence, answer_codebooks)
    vocab_info = {**vocab, "codec": manifest["codec"]}
    PackedData(arrays, vocab_info).save(out)
    return Path(out)
