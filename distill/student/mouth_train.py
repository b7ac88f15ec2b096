"""Train a student's mouth on an aligned pack, and give the student that mouth.

The mouth learns from the distinct answers of the ``train`` split (a turn's user side does
not matter to it), each drawn with weight (its turns)^(1 - ``answer_balance``): the domain's
59 fixed answers are most of what is said, its 1,700 composed ones most of what there is to
learn (``retaken_weight``: the answers ``renditions`` gave a new take more often).
Losses: codebook CE (codebook 0 weighted) plus the MSE of each word's log length.
``valid`` is the distinct answers of the ``valid`` split; the best mouth by its loss is
kept in ``OUT/best.pt``. The loss does not rank mouths by how well they are understood,
so ``snapshot_every`` also keeps mouths along the way for
``voxloop distill choose-mouth`` to judge by ear, and ``ema`` judges and keeps a moving
average of the weights (one step's weights carry that step's noise). Each step's batch and
dropout are a function of (seed, step), so a run resumed from ``OUT/checkpoint.pt``
continues exactly.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from voxloop.distill.student.averaged import AveragedWeights
from voxloop.distill.student.config import CODEBOOK_SIZE, MouthConfig, MouthTrainSettings
from voxloop.distill.student.layout import IGNORE
from voxloop.distill.student.mouth import Mouth, word_lengths
from voxloop.distill.student.pack import PackedData
from voxloop.errors import VoxloopError
from voxloop.training import cosine_lr, resume_checkpoint, torch_save_atomic

LR_FLOOR = 0.05


def distinct_answers(data: PackedData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One turn per distinct answer text of ``split`` (its first), in pack order, and how
    many turns of ``split`` have that answer."""
    rows = data.indices(split)
    _, first, counts = np.unique(data.answer_text[rows], return_index=True, return_counts=True)
    order = np.argsort(first)
    return rows[first[order]], counts[order]


def answer_draws(data: PackedData, rows: np.ndarray, turns: np.ndarray,
                 s: MouthTrainSettings) -> np.ndarray:
    """The probability of drawing each of the distinct answers ``rows`` (their train
    ``turns``) for a batch, as ``answer_balance`` and ``retaken_weight`` say."""
    from voxloop.distill.student.retaken import retaken_answers

    if not s.retaken_weight > 0:
        raise VoxloopError(f"--retaken-weight {s.retaken_weight}: must be above 0 (1: as often "
                           "as the others)")
    draw = turns ** (1.0 - s.answer_balance)
    if s.retaken_weight != 1.0:
        retaken = np.isin(data.answer_text[rows], sorted(retaken_answers(s.data)))
        if not retaken.any():
            raise VoxloopError(f"--retaken-weight: none of the answers re-taken is in {s.data}'s "
                               "train split (was the report written for another pack?)")
        draw = np.where(retaken, s.retaken_weight * draw, draw)
        print(f"mouth: {retaken.sum()} re-taken answers drawn {s.retaken_weight:g}x as often")
    return draw / draw.sum()


def answer_batch(data: PackedData, rows: np.ndarray, config: MouthConfig
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Answers ``rows`` -> words ``[B, W]`` (padded with ``pad_word``), frames per word
    ``[B, W]`` (0 for padding) and codes ``[B, K, F]`` (``IGNORE`` past each answer)."""
    words, frames = answer_lengths(data, rows)
    codes = [torch.from_numpy(data.answer(i)[:config.k_out].astype(np.int64)) for i in rows]
    n_words = max(len(w) for w in words)
    w = torch.full((len(rows), n_words), config.pad_word, dtype=torch.long)
    fr = torch.zeros(len(rows), n_words, dtype=torch.long)
    for b in range(len(rows)):
        w[b, :len(words[b])], fr[b, :len(frames[b])] = words[b], frames[b]
    return w, fr, pad_codes(codes)


def answer_lengths(data: PackedData, rows: np.ndarray
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Answers ``rows`` -> their words ``[W]`` and frames per word ``[W]`` (their takes')."""
    words = [torch.from_numpy(data.text(i)) for i in rows]
    frames = [word_lengths(torch.from_numpy(data.words(i)), data.answer(i).shape[1])
              for i in rows]
    return words, frames


def also_remembered(lengths: tuple[list, list], mouth) -> tuple[list, list]:
    """``(words, frames)`` of a pack's answers (``answer_lengths``) and, after them, those
    ``mouth`` remembers that the pack lacks. A mouth fine-tuned on a pack of fewer answers
    than it first learned from (a dataset since lost, or one not packed this time) goes on
    saying the others at the lengths it learned them at, not at predicted ones."""
    words, frames = list(lengths[0]), list(lengths[1])
    have = {tuple(int(i) for i in w) for w in words}
    for w, f in zip(*mouth.remembered_lengths(), strict=True):
        if tuple(w) not in have:
            words.append(w)
            frames.append(f)
    return words, frames


def pad_codes(codes: list[torch.Tensor]) -> torch.Tensor:
    """Answers' codes, each ``[K, F_b]`` -> ``[B, K, max F_b]``, ``IGNORE`` past each end."""
    c = torch.full((len(codes), codes[0].shape[0], max(x.shape[1] for x in codes)), IGNORE,
                   dtype=torch.long)
    for b, x in enumerate(codes):
        c[b, :, :x.shape[1]] = x
    return c


def resample_words(codes: torch.Tensor, frames: torch.Tensor, new: torch.Tensor
                   ) -> torch.Tensor:
    """An answer's codes ``[K, F]`` with words ``frames [W]`` long (each >= 1) -> codes
    ``[K, new.sum()]`` with word i ``new[i]`` frames long: its own frames, the nearest in
    time repeated or left out."""
    starts = frames.cumsum(0) - frames
    index = torch.cat([start + ((torch.arange(n) + 0.5) * length / n).long()
                       for start, length, n in zip(starts.tolist(), frames.tolist(),
                                                   new.tolist(), strict=True)])
    return codes[:, index]


@torch.no_grad()
def at_own_lengths(mouth: Mouth, words: torch.Tensor, frames: torch.Tensor,
                   codes: torch.Tensor, pick: np.ndarray
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of ``answer_batch`` with the answers ``pick [B]`` (bool) moved to the word
    lengths ``mouth`` gives them (``Mouth.word_frames``, with its ``pace``), their codes
    resampled to fit (``resample_words``).

    The mouth learns each answer from one take, and learned from it alone it says a word
    right only at the take's length to the frame: "A dog has four legs." with "A" one frame
    short comes out "I'm going to pass four legs.". Its own length model is off by a frame
    here and there; trained at those lengths, it says what it will be asked to say."""
    training = mouth.training
    mouth.eval()
    said = mouth.word_frames(words, mouth.encode(words).log_frames)
    mouth.train(training)
    answers, lengths = [], []
    for b in range(len(words)):
        real = words[b] != mouth.config.pad_word
        n, length = int(frames[b].sum()), frames[b][real]
        moved = pick[b] and bool((length > 0).all())  # a word with no frame has none to resample
        answers.append(resample_words(codes[b, :, :n], length, said[b][real]) if moved
                       else codes[b, :, :n])
        lengths.append(said[b] if moved else frames[b])
    return words, torch.stack(lengths), pad_codes(answers)


def mouth_losses(mouth: Mouth, words: torch.Tensor, frames: torch.Tensor, codes: torch.Tensor,
                 s: MouthTrainSettings) -> dict[str, torch.Tensor]:
    """CE of each codebook (``codebook{k}``), the words' log-length MSE (``duration``),
    codebook 0's accuracy (``accuracy0``) and the weighted ``total``."""
    out = mouth(words, frames, codes.clamp(min=0))
    losses = {f"codebook{k}": F.cross_entropy(out.logits[:, k].reshape(-1, CODEBOOK_SIZE),
                                              codes[:, k].reshape(-1), ignore_index=IGNORE)
              for k in range(codes.shape[1])}
    real = words != mouth.config.pad_word
    losses["duration"] = F.mse_loss(out.log_frames[real], torch.log1p(frames[real].float()))
    losses["total"] = (s.first_codebook_weight * losses["codebook0"]
                       + sum(losses[f"codebook{k}"] for k in range(1, codes.shape[1]))
                       + s.duration_weight * losses["duration"])
    with torch.no_grad():
        known = codes[:, 0] != IGNORE
        losses["accuracy0"] = (out.logits[:, 0].argmax(-1) == codes[:, 0])[known].float().mean()
    return losses


@torch.no_grad()
def evaluate_mouth(mouth: Mouth, data: PackedData, rows: np.ndarray, s: MouthTrainSettings,
                   batch: int = 64) -> dict[str, float]:
    """Mean losses over answers ``rows`` (weighted by answers per batch)."""
    mouth.eval()
    sums: dict[str, float] = {}
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        for key, value in mouth_losses(mouth, *answer_batch(data, part, mouth.config),
                                       s).items():
            sums[key] = sums.get(key, 0.0) + value.item() * len(part)
    mouth.train()
    return {key: value / len(rows) for key, value in sums.items()}


@torch.no_grad()
def fit_pace(mouth: Mouth, data: PackedData, rows: np.ndarray, batch: int = 64) -> float:
    """Set ``mouth.pace`` to the ratio of the answers' true frames to the frames the mouth
    gives them (``rows``: the training answers); returns it. The mouth's train/eval mode
    is left as it was."""
    training = mouth.training
    mouth.eval()
    mouth.pace.fill_(1.0)
    true = said = 0
    for start in range(0, len(rows), batch):
        words, frames, _ = answer_batch(data, rows[start:start + batch], mouth.config)
        said += int(mouth.word_frames(words, mouth.encode(words).log_frames).sum())
        true += int(frames.sum())
    mouth.pace.fill_(true / max(said, 1))
    mouth.train(training)
    return float(mouth.pace)


def save_mouth(path: Path, mouth: Mouth, config: MouthConfig, step: int, **extra) -> None:
    """A mouth file ``give_mouth`` reads: weights (with ``pace``), config, step, ``extra``."""
    torch_save_atomic(path, {"model": mouth.state_dict(), "config": asdict(config),
                             "step": step, **extra})


def mouth_pack(path: str | Path, vocab: dict, student_name: str | Path) -> PackedData:
    """The pack ``path``, refused unless it is aligned and tokenized with the student's
    words (``vocab``)."""
    data = PackedData.load(path)
    if data.vocab["text"] != vocab["text"]:
        raise VoxloopError(f"{path} was not tokenized with {student_name}'s words: pack it "
                           f"with `voxloop distill pack --vocab-from {student_name}`")
    if data.word_frames is None:
        raise VoxloopError(f"{path} has no answer word times, which the mouth learns from: "
                           "run `voxloop distill align PACK DATASET`")
    return data


def train_mouth(s: MouthTrainSettings, stop_at: int | None = None) -> Path:
    """Run or resume training; returns the run folder (``best.pt``, ``checkpoint.pt``, ``tb/``).
    ``stop_at`` ends after that step, as a kill would (resume tests)."""
    from torch.utils.tensorboard import SummaryWriter

    from voxloop.distill.student.model import load_student

    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    student, vocab = load_student(s.student)
    data = mouth_pack(s.data, vocab, s.student)
    config = MouthConfig(text_vocab=student.config.text_vocab, k_out=student.config.k_out,
                         d_model=s.d_model)
    (train_rows, turns), (valid_rows, _) = (distinct_answers(data, split)
                                            for split in ("train", "valid"))
    if not len(train_rows):
        raise VoxloopError(f"{s.data} has no train turns")
    draw = answer_draws(data, train_rows, turns, s)
    torch.manual_seed(s.seed)
    mouth = Mouth(config).train()
    mouth.set_spelling(vocab["text"])
    remembered = answer_lengths(data, train_rows)
    if not s.fresh and student.mouth is not None and student.mouth.config == config:
        mouth.load_state_dict(student.mouth.state_dict())  # go on from the student's own
        remembered = also_remembered(remembered, student.mouth)
        print(f"mouth: starts from {s.student}'s own")
    optimizer = torch.optim.AdamW(mouth.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    step, best = 0, float("inf")
    state = resume_checkpoint(out / "checkpoint.pt", asdict(config), "mouth")
    if state is not None:
        mouth.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best = state["step"], state["best"]
    mouth.remember(*remembered)
    averaged = AveragedWeights(mouth, s.ema)
    if state is not None and state.get("ema"):
        averaged.shadow = state["ema"]
    writer = SummaryWriter(str(out / "tb"))
    print(f"mouth: {sum(p.numel() for p in mouth.parameters()) / 1e6:.2f} M parameters, "
          f"{len(train_rows)} train / {len(valid_rows)} valid answers")
    t_start = time.time()
    bar = tqdm(total=s.steps, initial=step, desc="mouth train")
    while step < s.steps:
        rng = np.random.default_rng([s.seed, step])
        torch.manual_seed(int(rng.integers(2**62)))
        rows = train_rows[rng.choice(len(train_rows), s.batch_size, p=draw)]
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, s.lr, s.warmup_steps, s.steps, LR_FLOOR)
        batch = answer_batch(data, rows, config)
        if s.own_lengths > 0:
            batch = at_own_lengths(mouth, *batch, rng.random(len(rows)) < s.own_lengths)
        losses = mouth_losses(mouth, *batch, s)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(mouth.parameters(), 1.0)
        optimizer.step()
        averaged.update(mouth)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{losses['total'].item():.3f}",
                        acc0=f"{losses['accuracy0'].item():.2f}")
        for key, value in losses.items():
            writer.add_scalar(f"train/{key}", value.item(), step)
        out_of_time = bool(s.max_minutes) and (time.time() - t_start) / 60 > s.max_minutes
        last = step == s.steps or out_of_time or step == stop_at
        with averaged.applied(mouth):
            valid = {}
            if len(valid_rows) and (step % s.eval_every == 0 or last):
                valid = evaluate_mouth(mouth, data, valid_rows, s)
                for key, value in valid.items():
                    writer.add_scalar(f"valid/{key}", value, step)
                tqdm.write(f"step {step}: valid "
                           + " ".join(f"{k} {v:.4f}" for k, v in valid.items()))
                if valid["total"] < best:
                    best = valid["total"]
                    save_mouth(out / "best.pt", mouth, config, step, valid=valid)
            if s.snapshot_every and (step % s.snapshot_every == 0 or last):
                trained_at = mouth.pace.clone()  # the snapshot's own pace: training goes on
                pace = fit_pace(mouth, data, train_rows)  # at the one it had (a buffer,
                save_mouth(out / "snapshots" / f"step-{step:06d}.pt", mouth, config, step,
                           pace=pace, valid=valid)  # which `applied` does not restore)
                mouth.pace.copy_(trained_at)
        if step % s.ckpt_every == 0 or last:
            torch_save_atomic(out / "checkpoint.pt", {
                "model": mouth.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "best": best, "config": asdict(config), "ema": averaged.shadow})
        if out_of_time or step == stop_at:
            break
    bar.close()
    averaged.apply(mouth)  # the mouth kept when there is no best.pt
    best_state = torch.load(out / "best.pt", weights_only=False) if (out / "best.pt").is_file() \
        else {"config": asdict(config), "step": step, "valid": {}}  # no valid split: the last
    if "model" in best_state:
        mouth.load_state_dict(best_state["model"])
    best_state["pace"] = fit_pace(mouth, data, train_rows)
    best_state["model"] = mouth.state_dict()
    torch_save_atomic(out / "best.pt", best_state)
    print(f"best mouth: step {best_state['step']}, pace {best_state['pace']:.3f} (true over "
          "predicted frames of the train answers)")
    return out


def student_and_pack(student_name: str | Path, data_path: str | Path):
    """``(student, vocab, pack)``: a student with a mouth and the aligned pack ``data_path``
    tokenized with its words (``mouth_pack``), refused with a clear error otherwise."""
    from voxloop.distill.student.model import load_student

    student, vocab = load_student(student_name)
    if student.mouth is None:
        raise VoxloopError(f"{student_name} has no mouth: train one with `voxloop distill "
                           "mouth`")
    return student, vocab, mouth_pack(data_path, vocab, student_name)


def remember_lengths(student_name: str | Path, data_path: str | Path, folder: str | Path
                     ) -> tuple[Path, int]:
    """Write ``folder``: the student ``student_name`` whose mouth remembers the word lengths
    of the train answers of the pack ``data_path``, and only those (as ``train_mouth`` gives a
    fresh mouth), its card kept; returns the folder and how many answers it remembers."""
    from voxloop.distill.student.model import save_student, student_folder
    from voxloop.distill.student.mouth_files import with_measured_heads
    from voxloop.models import carried_card

    student, vocab, data = student_and_pack(student_name, data_path)
    rows, _ = distinct_answers(data, "train")
    if not len(rows):
        raise VoxloopError(f"{data_path} has no train turns")
    student.mouth.remember(*answer_lengths(data, rows))
    source = student_folder(student_name)
    return with_measured_heads(source, lambda: save_student(student, vocab, folder,
                                                            carried_card(source))), len(rows)
