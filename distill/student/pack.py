"""From dialogue examples to the student's token sequences (``layout``), and batches of them.

``PackedData`` keeps a whole split in a few flat numpy arrays (the codes-only
export that travels to a GPU machine as one ``.npz``).

Targets: ``teacher`` (the default) trains on what the cascade said, ``intended``
on what the prompt asked for (``voxloop.distill.data.targets``).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxloop.audio import MODEL_RATE_HZ
from voxloop.distill.student.augment import (
    Augment,
    augment_user,
    jitter_words,
    noisy_answer_inputs,
)
from voxloop.distill.student.config import TARGETS
from voxloop.distill.student.layout import (
    IGNORE,
    Sequence,
    build_sequence,
)
from voxloop.distill.student.model import StudentConfig
from voxloop.errors import VoxloopError
from voxloop.training import atomic_write, is_npz_archive


class PackedData:
    """Examples as flat arrays: codes concatenated over examples, with offsets.

    A semantic pack (``user_input == "semantic"``) holds user tokens ``[1, sum F]``
    instead of codec codes, the token of silence as ``silence_codes [1]`` and the
    tokenizer's codebook ``user_codebooks [N, D]`` (the student's frozen input vectors:
    training needs no tokenizer file). An aligned pack (``voxloop distill align``) holds
    ``word_frames``: the start frame of every answer word, beside ``text_ids``."""

    ARRAYS = ("user_codes", "user_offsets", "answer_codes", "answer_offsets", "text_ids",
              "text_offsets", "ctc_ids", "ctc_offsets", "split", "id", "intent", "user_voice",
              "asr_text", "answer_text", "prompt_text", "silence_codes", "teacher_text",
              "intended_text")
    OPTIONAL = ("user_codebooks", "word_frames")

    def __init__(self, arrays: dict[str, np.ndarray], vocab: dict) -> None:
        arrays = {"teacher_text": arrays["answer_text"],  # packs made before these existed
                  "intended_text": np.full(len(arrays["id"]), ""), **arrays}
        self.arrays, self.vocab = arrays, vocab
        for name in self.ARRAYS:
            setattr(self, name, arrays[name])
        self.user_codebooks = arrays.get("user_codebooks")
        self.word_frames = arrays.get("word_frames")

    @property
    def user_input(self) -> str:
        """``codes`` (codec codes: a codes or latent student) or ``semantic`` (tokens)."""
        return self.vocab.get("user_input", "codes")

    def __len__(self) -> int:
        return len(self.id)

    def user(self, i: int) -> np.ndarray:
        return self.user_codes[:, self.user_offsets[i]:self.user_offsets[i + 1]]

    def answer(self, i: int) -> np.ndarray:
        return self.answer_codes[:, self.answer_offsets[i]:self.answer_offsets[i + 1]]

    def text(self, i: int) -> np.ndarray:
        return self.text_ids[self.text_offsets[i]:self.text_offsets[i + 1]].astype(np.int64)

    def words(self, i: int) -> np.ndarray:
        """Start frame of each answer word ``[len(text(i))]`` (an aligned pack)."""
        if self.word_frames is None:
            raise VoxloopError("this pack has no answer word times, which a word-pointer "
                               "student needs: run `voxloop distill align PACK DATASET`")
        return self.word_frames[self.text_offsets[i]:self.text_offsets[i + 1]].astype(np.int64)

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
        make = "make one with voxloop distill pack DATASET_FOLDER OUT.npz"
        if not Path(path).is_file():
            raise VoxloopError(f"packed dataset not found: {path} ({make})")
        if not is_npz_archive(path):
            raise VoxloopError(f"{path} is not a packed dataset (not an .npz archive): {make}")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in cls.ARRAYS + cls.OPTIONAL if k in z.files}
                vocab = json.loads(str(z["vocab"]))
            return cls(arrays, vocab)
        # a damaged archive, or the arrays of something else
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise VoxloopError(f"{path} is not a packed dataset ({exc}): {make}") from exc


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
    """Right-padded: ``ids [B, T, C]``, ``text_target [B, T]``, ``audio_target [B, T, K_out]``,
    ``boundary_target [B, T]``, ``ctc_target [B, L]`` with ``ctc_lengths [B]``, ``n_user [B]``."""

    ids: torch.Tensor
    text_target: torch.Tensor
    audio_target: torch.Tensor
    boundary_target: torch.Tensor
    ctc_target: torch.Tensor
    ctc_lengths: torch.Tensor
    n_user: torch.Tensor

    def to(self, device) -> Batch:
        return Batch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def collate(config: StudentConfig, seqs: list[Sequence]) -> Batch:
    length = max(len(s.ids) for s in seqs)
    ctc_len = max(1, max(len(s.ctc_target) for s in seqs))
    b = len(seqs)
    ids = np.full((b, length, config.channels), config.null_id, dtype=np.int64)
    text = np.full((b, length), IGNORE, dtype=np.int64)
    audio = np.full((b, length, config.k_out), IGNORE, dtype=np.int64)
    boundary = np.full((b, length), IGNORE, dtype=np.int64)
    ctc = np.zeros((b, ctc_len), dtype=np.int64)
    for i, s in enumerate(seqs):
        n = len(s.ids)
        ids[i, :n], text[i, :n], audio[i, :n] = s.ids, s.text_target, s.audio_target
        boundary[i, :n] = s.boundary_target
        ctc[i, :len(s.ctc_target)] = s.ctc_target
    return Batch(*(torch.from_numpy(a) for a in (ids, text, audio, boundary, ctc)),
                 torch.tensor([len(s.ctc_target) for s in seqs]),
                 torch.tensor([s.n_user for s in seqs]))


def make_batch(config: StudentConfig, data: PackedData, rows: np.ndarray,
               aug: Augment | None, rng: np.random.Generator, words_only: bool = False) -> Batch:
    """Sequences of examples ``rows`` (user codes perturbed by ``aug`` if given; with
    ``words_only``, cut after the answer's words: ``Sequence.words_only``)."""
    seqs = []
    aug = aug.at_rate(config.user_frame_rate_hz) if aug is not None else None
    for i in rows:
        user = data.user(i)
        if aug is not None:
            user = augment_user(user, data.silence_codes, aug, rng, vocab=config.user_vocab)
        words = None
        if config.word_pointer and not words_only:  # the pointer rides on the audio steps
            words = data.words(i)
            if aug is not None:
                words = jitter_words(words, data.answer(i).shape[1], aug.word_jitter_frames, rng)
        seq = build_sequence(config, np.maximum(user, 0), data.text(i), data.answer(i),
                             data.ctc(i), words, words_only)
        if aug is not None:  # dropped user codes -> the zero (null) embedding
            seq.ids[:user.shape[1], :config.k_in][user[:config.k_in].T < 0] = config.null_id
            if aug.answer_code_noise:
                noisy_answer_inputs(config, seq.ids, user.shape[1] + len(data.text(i)) + 1,
                                    aug.answer_code_noise, rng)
        seqs.append(seq)
    return collate(config, seqs)


def pack_dataset(folder: str | Path, out: str | Path, answer_codebooks: int = 8,
                 vocab: dict | None = None, valid_every: int = 0,
                 targets: str = "teacher", corpus: str | Path | None = None,
                 user_input: str = "codes", semantic=None, batch_size: int = 32,
                 jobs: int = 1, progress: bool = False, keep_vocab: dict | None = None,
                 extra_train: tuple[str | Path, ...] = (),
                 train_skips_samples: tuple[int, ...] = (0,),
                 splits: tuple[str, ...] = (), residual_books=()) -> Path:
    """A dataset folder (``voxloop distill synth``) -> one codes-only ``.npz`` for training.

    The vocabularies are ``vocab`` (a trained model's) or built from the training
    split and the domain (and every word of ``keep_vocab``). ``valid_every`` N > 0: while
    the dataset has no valid turns yet (a partial build), every Nth training turn becomes a
    valid turn.
    ``targets``: ``teacher`` or ``intended`` (``voxloop.distill.data.targets``); ``corpus``:
    also train on the questions of this codec corpus (``corpus_turns``; intended only).
    ``user_input`` ``semantic``: the user turns become the tokens of ``semantic`` (a
    tokenizer, its folder or bundled name; default voxloop-semantic) computed from the
    dataset's 16 kHz user audio, ``batch_size`` clips at a time, cached per shard and
    computed by ``jobs`` processes (``distill.student.token_cache``). A dataset still being
    built is packed from the shards that exist (``dataset_progress`` says how many).
    ``extra_train``: more dataset folders (other plans, e.g. another ``--seed`` with more
    voices for some intents) whose train splits are added to the train split; their other
    splits are left out, so validation and the held-out splits stay ``folder``'s.
    ``train_skips_samples`` (semantic): every train turn is packed once per skip, its tokens
    those of its audio heard from that many samples in (a fraction of a token: the grid
    falls elsewhere on the speech, as it does on a stranger's turn); a copy's id is
    ``{id}@{skip}``. Validation and the held-out splits are heard from the start.
    ``splits``: only these splits of ``folder`` are read and tokenized (an evaluation of
    the held-out turns need not tokenize 34,000 train turns); empty: all. Without the
    train split the vocabularies must be given (``vocab``). ``residual_books`` (semantic):
    residual levels' codebooks ``[N, D]`` each (``distill.student.residual_levels``): 1 +
    levels tokens per frame, for a student that hears them.
    """
    from voxloop.distill.data.dataset import load_manifest
    from voxloop.distill.student.vocab import Tokenizer, build_vocab
    if targets not in TARGETS:
        raise VoxloopError(f"targets must be one of {TARGETS}, not {targets!r}")
    if user_input not in ("codes", "semantic"):
        raise VoxloopError(f"user_input must be codes or semantic, not {user_input!r}")
    if vocab is not None and keep_vocab is not None:
        raise VoxloopError("give a student's vocabularies to tokenize with, or ones to keep "
                           "words of, not both (--vocab-from or --keep-words-of)")
    if corpus and targets != "intended":
        raise VoxloopError("corpus turns have no teacher answer: use them with intended targets")
    if corpus and user_input == "semantic":
        raise VoxloopError("corpus turns keep no 16 kHz audio to tokenize: pack semantic "
                           "tokens without --corpus")
    if not train_skips_samples or len(set(train_skips_samples)) < len(train_skips_samples):
        raise VoxloopError(f"train skips must be distinct and at least one, not "
                           f"{list(train_skips_samples)}")
    if splits and "train" not in splits and vocab is None:
        raise VoxloopError(f"packing {', '.join(splits)} alone needs the vocabularies of the "
                           "model it is for (--vocab-from): they are built from the train split")
    if train_skips_samples != (0,) and user_input != "semantic":
        raise VoxloopError("other alignments are for semantic tokens (--user-input semantic)")
    manifest = load_manifest(folder)
    for other in extra_train:
        if load_manifest(other)["codec"] != manifest["codec"]:
            raise VoxloopError(f"{other} was made with another codec than {folder}: its "
                               "answer codes would not match (voxloop distill synth --recode)")
    extra: dict[str, np.ndarray] = {}
    tokens = None
    if user_input == "semantic":
        from voxloop.distill.student.user_tokens import load_tokenizer, semantic_info

        tokenizer, tokenizer_folder = load_tokenizer(semantic)
        if residual_books:
            tokenizer = tokenizer.with_residual_levels(residual_books)
        books = [tokenizer.codebook_vectors().float().cpu(), *tokenizer.residual_books]
        info = semantic_info(tokenizer, tokenizer_folder)
        tokens = (tokenizer, tokenizer_folder, info)
        extra["user_codebooks"] = torch.cat(books).numpy()
        frame = round(MODEL_RATE_HZ / tokenizer.frame_rate_hz)
        if not all(0 <= s < frame for s in train_skips_samples):
            raise VoxloopError(f"train skips must be 0 to {frame - 1} samples (under one "
                               f"token), not {list(train_skips_samples)}")
    from voxloop.distill.student.token_cache import finished_shards

    examples = []
    for source in (folder, *(extra_train if not splits or "train" in splits else ())):
        main = source is folder  # the only source whose other splits are kept (from 0)
        # the shards there now, read at every skip (a synth still writing adds more)
        present = finished_shards(source, splits if main else ("train",))
        for skip in sorted({*train_skips_samples, *([0] if main else [])}):
            turns = list(_user_turns(source, user_input, tokens, batch_size, jobs, progress,
                                     skip, present))
            if not turns:
                raise VoxloopError(f"{source} has no finished shard yet")
            examples += [e if not skip else dataclasses.replace(e, id=f"{e.id}@{skip}")
                         for e in turns if (e.split == "train" and skip in train_skips_samples)
                         or (e.split != "train" and not skip and main)]
    train_ids = [e.id for e in examples if e.split == "train"]
    if extra_train and len(set(train_ids)) < len(train_ids):
        raise VoxloopError("the datasets share turn ids: build an --extra-train dataset with "
                           "another plan seed (voxloop distill synth --seed N)")
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
        vocab = build_vocab([e.answer_text for e in train], [e.asr_text for e in train],
                            keep=keep_vocab)
    vocab = {"text": vocab["text"], "ctc": vocab["ctc"]}
    if user_input == "semantic":
        silence = np.array([info["silence"], *info.get("residual_levels", {}).get("silence", [])],
                           np.int16)
        vocab_info = {**vocab, "codec": manifest["codec"], "user_input": "semantic",
                      "semantic": info}
    else:
        from voxloop.codecs.base import silence_codes
        from voxloop.codecs.registry import load_codec

        silence = silence_codes(load_codec(manifest["codec"]["name"])).astype(np.int16)
        vocab_info = {**vocab, "codec": manifest["codec"]}
    arrays = pack_examples(examples, Tokenizer(vocab), silence, answer_codebooks)
    PackedData({**arrays, **extra}, vocab_info).save(out)
    return Path(out)


def _user_turns(folder: str | Path, user_input: str, tokens, batch_size: int, jobs: int,
                progress: bool, skip_samples: int, present: list[str]):
    """The ``DialogueExample``s of ``folder``'s shards ``present`` without their audio;
    with ``tokens`` (tokenizer, its folder, ``semantic_info``), ``user_codes`` are the
    semantic tokens of its audio heard from ``skip_samples`` in."""
    from voxloop.distill.data.dataset import iter_examples, load_manifest
    from voxloop.distill.student.token_cache import skipped

    stream = (dataclasses.replace(e, user_audio=None, answer_audio=None) if tokens is None
              else e for e in iter_examples(folder, shards=set(present)))  # audio: not kept
    if tokens is None:
        return stream
    from voxloop.distill.student.user_tokens import with_semantic_tokens

    tokenizer, tokenizer_folder, info = tokens
    if info["sha256"]:  # a tokenizer on disk: tokens cached per shard, in parallel
        from voxloop.distill.student.token_cache import fill_cache, with_cached_tokens

        cache = fill_cache(folder, tokenizer, tokenizer_folder, info["sha256"], jobs=jobs,
                           batch_size=batch_size, progress=progress, skip_samples=skip_samples,
                           shards=present)
        return with_cached_tokens(stream, cache)
    total = sum(s["examples_done"] for s in load_manifest(folder)["splits"].values())
    return with_semantic_tokens(skipped(stream, skip_samples), tokenizer, batch_size,
                                progress=progress, total=total)


def dataset_progress(folder: str | Path) -> str:
    """"train 12/1063 shards (384 turns), valid 0/33 ...": what a pack of ``folder``
    now reads (a dataset still being built has only some of its shards)."""
    from voxloop.distill.data.dataset import load_manifest

    manifest = load_manifest(folder)
    parts = [f"{name} {info['shards_done']}/{len(info['shards'])} shards "
             f"({info['examples_done']} turns)" for name, info in manifest["splits"].items()]
    return ("complete: " if manifest["complete"] else "still being built: ") + ", ".join(parts)
