"""Train the student: audio CE (delayed codebooks) + text CE (answer words) + CTC (user words)
(+ the word pointer's next-word-starts BCE).

One process, or DDP under torchrun (gloo on CPU, nccl on GPU). Each step's
batch and dropout come from generators seeded by (seed, step, rank), so a run
resumed from ``OUT/checkpoint.pt`` sees exactly the batches an uninterrupted
run would. Every ``eval_every`` steps the loss on the ``valid`` split is
measured; the best model (lowest sum of the ``select_on`` losses) is kept in
``OUT/best.pt`` and training stops early after ``patience`` evaluations
without improvement.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from voxloop.distill.student.augment import Augment, nearest_codes
from voxloop.distill.student.averaged import AveragedWeights
from voxloop.distill.student.config import StudentConfig, StudentTrainSettings
from voxloop.distill.student.layout import IGNORE, audio_id_offsets
from voxloop.distill.student.model import CODEBOOK_SIZE, Student, StudentOutput
from voxloop.distill.student.pack import Batch, PackedData, make_batch
from voxloop.distill.student.train_data import answer_weights, hearing_config, load_data
from voxloop.errors import VoxloopError
from voxloop.training import (
    cosine_lr,
    load_checkpoint,
    resume_checkpoint,
    setup_distributed,
    teardown_distributed,
    torch_save_atomic,
)

# A twentieth of the peak: fine-tuning with --init-from continues from a learning rate
# that still moves the weights.
LR_FLOOR = 0.05
NEIGHBOURS = 8  # nearest codes a token may be swapped for (--neighbour-noise)


def learning_rate(step: int, s: StudentTrainSettings) -> float:
    return cosine_lr(step, s.lr, s.warmup_steps, s.steps, LR_FLOOR)


@torch.no_grad()
def self_fed(model, batch: Batch, share: float, generator: torch.Generator) -> Batch:
    """``batch`` with ``share`` of its fed-back answer codes replaced by the model's own
    greedy predictions of them (targets unchanged). The position that predicts step ``s``
    is followed by the one that feeds step ``s`` back, so a prediction at ``p`` replaces
    the input at ``p + 1``."""
    config = model.module.config if hasattr(model, "module") else model.config
    predicted = model(batch.ids, heads=("audio",)).audio[:, :-1, :, :CODEBOOK_SIZE].argmax(-1)
    target = batch.audio_target[:, :-1]  # [B, T - 1, K_out]
    real = (target != IGNORE) & (target < CODEBOOK_SIZE)
    pick = real & (torch.rand(target.shape, generator=generator) < share).to(real.device)
    offsets = torch.as_tensor(audio_id_offsets(config), device=predicted.device)
    ids = batch.ids.clone()
    fed = ids[:, 1:, :config.k_out]
    ids[:, 1:, :config.k_out] = torch.where(pick, predicted + offsets, fed)
    return replace(batch, ids=ids)


def compute_losses(model, batch: Batch, s: StudentTrainSettings,
                   out: StudentOutput | None = None) -> dict[str, torch.Tensor]:
    """Mean losses of one batch (``out``: the model's output on it, if already run);
    ``total`` is what training minimizes."""
    out = model(batch.ids) if out is None else out
    per_code = F.cross_entropy(out.audio.flatten(0, 2).float(), batch.audio_target.flatten(),
                               ignore_index=IGNORE, reduction="none").view(batch.audio_target.shape)
    valid = batch.audio_target != IGNORE  # [B, T, K_out]
    weights = torch.ones(per_code.shape[-1], device=per_code.device)
    weights[0] = s.first_codebook_weight
    audio = per_code.sum() / valid.sum().clamp(min=1)  # reported: every code alike
    weighted = (per_code * weights).sum() / (valid * weights).sum().clamp(min=1)
    text = F.cross_entropy(out.text.flatten(0, 1).float(), batch.text_target.flatten(),
                           ignore_index=IGNORE)
    n_user = int(batch.n_user.max())
    log_probs = out.ctc[:, :n_user].float().log_softmax(-1).transpose(0, 1)  # [T, B, V]
    ctc = F.ctc_loss(log_probs, batch.ctc_target, batch.n_user, batch.ctc_lengths,
                     blank=0, zero_infinity=True)
    total = weighted + s.text_weight * text + s.ctc_weight * ctc
    losses = {"audio": audio, "text": text, "ctc": ctc}
    mask = batch.boundary_target != IGNORE
    if out.boundary is not None and mask.any():  # (a words-only batch says no frame)
        losses["boundary"] = F.binary_cross_entropy_with_logits(
            out.boundary[mask].float(), batch.boundary_target[mask].float())
        total = total + s.boundary_weight * losses["boundary"]
    return {"total": total, **losses}


@torch.no_grad()
def evaluate(model: Student, data: PackedData, rows: np.ndarray, s: StudentTrainSettings,
             device: torch.device, batch_size: int = 32) -> dict[str, float]:
    """Losses and teacher-forced accuracies over ``rows`` (no augmentation);
    ``answer_err``: share of turns with a wrong answer word under teacher forcing."""
    model.eval()
    sums: dict[str, float] = {}
    counts = {"text": 0, "audio0": 0}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = make_batch(model.config, data, chunk, None, np.random.default_rng(0),
                           s.words_only).to(device)
        out = model(batch.ids)
        for key, value in compute_losses(model, batch, s, out).items():
            sums[key] = sums.get(key, 0.0) + value.item() * len(chunk)
        mask = batch.text_target != IGNORE
        hit = (out.text.argmax(-1) == batch.text_target) & mask
        sums["text_acc"] = sums.get("text_acc", 0.0) + hit.sum().item()
        wrong = (mask & ~hit).any(dim=1)  # some answer word would be wrong: the turn fails
        sums["answer_err"] = sums.get("answer_err", 0.0) + wrong.sum().item()
        counts["text"] += int(mask.sum())
        mask0 = batch.audio_target[..., 0] != IGNORE
        sums["audio0_acc"] = sums.get("audio0_acc", 0.0) + (
            (out.audio[..., 0, :].argmax(-1) == batch.audio_target[..., 0]) & mask0).sum().item()
        counts["audio0"] += int(mask0.sum())
        if out.boundary is not None:  # next word starts: said when it does, not otherwise
            said, mask = out.boundary > 0, batch.boundary_target != IGNORE
            sums["boundary_acc"] = sums.get("boundary_acc", 0.0) + (
                (said == (batch.boundary_target == 1)) & mask).sum().item()
            counts["boundary"] = counts.get("boundary", 0) + int(mask.sum())
    model.train()
    result = {k: v / len(rows) for k, v in sums.items() if not k.endswith("_acc")}
    result["text_acc"] = sums["text_acc"] / max(1, counts["text"])
    result["audio0_acc"] = sums["audio0_acc"] / max(1, counts["audio0"])
    if "boundary" in counts:
        result["boundary_acc"] = sums["boundary_acc"] / max(1, counts["boundary"])
    return result


def train(settings: StudentTrainSettings, config: StudentConfig | None = None,
          data: PackedData | None = None, stop_at: int | None = None) -> Path:
    """Run or resume training; returns the run folder (``best.pt``, ``checkpoint.pt``, ``tb/``).

    ``stop_at`` ends the process after that step, as a kill would (for resume tests).
    """
    if settings.words_only and settings.self_feed:
        raise VoxloopError("--self-feed feeds the model its own audio steps, which "
                           "--words-only leaves out: use one of them")
    rank, world, device = setup_distributed(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    hears = "semantic" if config is not None and config.user_input == "semantic" else None
    if data is None and world > 1:  # one rank packs (out/data.npz); the others load it
        if rank == 0:
            load_data(settings.data, out, user_input=hears)
        dist.barrier()
    data = data or load_data(settings.data, out, user_input=hears)
    init = None
    if settings.init_from:
        from voxloop.distill.student.model import load_student
        from voxloop.distill.student.warm import grows

        init, vocab = load_student(settings.init_from)
        if not grows(data.vocab, vocab):  # new words are fine: new rows (grow_vocab)
            raise VoxloopError(f"{settings.data} lacks words of {settings.init_from}'s "
                               "vocabularies: pack it with `voxloop distill pack --keep-words-of "
                               f"{settings.init_from}`")
        mine, theirs = (v.get("semantic") or {} for v in (data.vocab, vocab))
        if mine.get("sha256") != theirs.get("sha256") and not settings.new_ears:
            raise VoxloopError(f"{settings.data} was not heard through {settings.init_from}'s "
                               "semantic tokenizer: pack it with the same --semantic, or "
                               "give --new-ears to re-learn hearing with the data's tokenizer")
        # the word pointer is the one change a fine-tune may make to the shape
        pointer = init.config.word_pointer or (config is not None and config.word_pointer)
        config = replace(init.config, word_pointer=pointer)
    config = replace(config or StudentConfig(), text_vocab=len(data.vocab["text"]),
                     ctc_vocab=len(data.vocab["ctc"]))
    config = hearing_config(config, data)
    torch.manual_seed(settings.seed)
    student = Student(config)
    if init is not None:
        from voxloop.distill.student.warm import grow_vocab

        missing = set(student.state_dict()) - set(init.state_dict())
        if any(not k.startswith(("boundary_head.", "word_frame_embed.")) for k in missing):
            raise VoxloopError(f"{settings.init_from} does not fit this student: missing "
                               f"{sorted(missing)}")
        new_words = grow_vocab(student, data.vocab, init, vocab)
        if "word_frame_embed.weight" in missing:  # a new input starts silent
            torch.nn.init.zeros_(student.word_frame_embed.weight)
        if new_words and rank == 0:
            print(f"{new_words} answer words new to {settings.init_from} start untrained")
    if config.user_input == "semantic" and (init is None or settings.new_ears):
        student.set_user_codebooks(torch.from_numpy(data.user_codebooks))  # packed with it
    elif init is None and config.user_latent_dim:  # (a resumed run loads them from its checkpoint)
        from voxloop.codecs.registry import load_codec

        if "codec" not in data.vocab:
            raise VoxloopError(f"{settings.data} names no codec, which --student-user-latent-dim "
                               "needs: pack it with `voxloop distill pack`")
        student.set_user_codebooks(load_codec(data.vocab["codec"]["name"]))
    ckpt_path, best_path = out / "checkpoint.pt", out / "best.pt"
    resuming = ckpt_path.is_file()  # its weights replace any start
    if settings.warm_from and init is None and not resuming:
        from voxloop.distill.student.model import load_student
        from voxloop.distill.student.warm import warm_start

        copied = warm_start(student, data.vocab, *load_student(settings.warm_from))
        if rank == 0:
            print(f"warm start from {settings.warm_from}: {copied}")
    student = student.to(device).train()
    if student.mouth is not None:  # trained on its own (distill mouth); kept as it is
        student.mouth.requires_grad_(False)
    if settings.words_only:  # what only the audio steps use stays as it is
        for part in (student.audio_head, student.boundary_head, student.word_frame_embed):
            if part is not None:
                part.requires_grad_(False)
    learned = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in learned if p.dim() >= 2]
    no_decay = [p for p in learned if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.95))
    step, best, since_best = 0, float("inf"), 0
    if resuming:  # (one saved with another config is a clear error, not a size mismatch)
        state = resume_checkpoint(ckpt_path, asdict(config), "student")
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, since_best = state["step"], state["best"], state["since_best"]
    averaged = AveragedWeights(student, settings.ema)
    if resuming and state.get("ema"):  # on the device its weights are on (a GPU run)
        averaged.shadow = {k: v.to(device) for k, v in state["ema"].items()}
    model = torch.nn.parallel.DistributedDataParallel(student) if world > 1 else student
    train_rows, valid_rows = data.indices("train"), data.indices("valid")
    if not len(train_rows):
        raise VoxloopError(f"{settings.data} has no train turns (a dataset still being built "
                           "writes its held-out and valid shards first): pack it again later")
    draw = answer_weights(data, train_rows, settings.answer_balance,
                          settings.refusal_share)
    aug = None
    if settings.augment:
        near = None
        if settings.neighbour_noise:
            if config.user_input != "semantic":
                raise VoxloopError("--neighbour-noise is for a semantic student (its user "
                                   f"tokens have one codebook); this one hears {config.user_input}")
            if data.user_codebooks is None:
                raise VoxloopError(f"{settings.data} holds no tokenizer codebook "
                                   "(user_codebooks): pack it again for --neighbour-noise")
            near = nearest_codes(data.user_codebooks[:config.user_vocab], NEIGHBOURS)  # tokens
        aug = Augment(span_mask=settings.span_mask, neighbour_noise=settings.neighbour_noise,
                      neighbours=near)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        (out / "settings.json").write_text(json.dumps(
            {"train": asdict(settings), "student": asdict(config)}, indent=2))
        hears = config.user_input + (f" ({data.vocab['semantic']['name']}, "
                                     f"{config.user_frame_rate_hz:g} Hz)"
                                     if config.user_input == "semantic" else "")
        print(f"student: {student.num_parameters() / 1e6:.2f} M parameters, hears {hears}, "
              f"{len(train_rows)} train / {len(valid_rows)} valid turns, {device}")
    t_start = time.time()
    bar = tqdm(total=settings.steps, initial=step, desc="student train", disable=rank != 0)
    stopped_early = bool(settings.patience) and since_best >= settings.patience
    while step < settings.steps and not stopped_early:  # (a rerun of a run that stopped
        # early does not train on: the same command gives the same model)
        rng = np.random.default_rng([settings.seed, step, rank])
        torch.manual_seed(int(rng.integers(2**62)))  # dropout: a function of the step too
        rows = train_rows[rng.choice(len(train_rows), settings.batch_size, p=draw)
                          if draw is not None else
                          rng.integers(0, len(train_rows), settings.batch_size)]
        batch = make_batch(config, data, rows, aug, rng, settings.words_only).to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        if settings.self_feed:
            with amp:
                batch = self_fed(model, batch, settings.self_feed,
                                 torch.Generator().manual_seed(int(rng.integers(2**62))))
        with amp:
            losses = compute_losses(model, batch, settings)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        averaged.update(student)
        step += 1
        bar.update(1)
        elapsed_min = (time.time() - t_start) / 60
        out_of_time = bool(settings.max_minutes) and elapsed_min > settings.max_minutes
        stop = False
        if writer is not None:
            for key, value in losses.items():
                writer.add_scalar(f"train/{key}", value.item(), step)
            writer.add_scalar("train/grad_norm", grad_norm.item(), step)
            bar.set_postfix(loss=f"{losses['total'].item():.3f}",
                            audio=f"{losses['audio'].item():.3f}")
            last = step == settings.steps or out_of_time
            if len(valid_rows) and (step % settings.eval_every == 0 or last):
                with averaged.applied(student):  # judged and kept: the average, if any
                    with amp:
                        valid = evaluate(student, data, valid_rows, settings, device)
                    for key, value in valid.items():
                        writer.add_scalar(f"valid/{key}", value, step)
                    tqdm.write(f"step {step}: valid " + " ".join(
                        f"{k} {v:.4f}" for k, v in valid.items()))
                    score = sum(valid[k] for k in settings.select_on.split("+"))
                    if score < best:
                        best, since_best = score, 0
                        torch_save_atomic(best_path, {
                            "model": student.state_dict(), "config": asdict(config),
                            "vocab": data.vocab, "step": step, "valid": valid})
                    else:
                        since_best += 1
                        stop = bool(settings.patience) and since_best >= settings.patience
            if step % settings.ckpt_every == 0 or last or stop:
                torch_save_atomic(ckpt_path, {
                    "model": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "best": best, "since_best": since_best,
                    "config": asdict(config), "vocab": data.vocab, "ema": averaged.shadow})
        if world > 1:  # every rank stops at the same step as rank 0
            flags = torch.tensor([float(stop), float(out_of_time)], device=device)
            dist.broadcast(flags, src=0)
            stop, out_of_time = bool(flags[0]), bool(flags[1])
        if stop or out_of_time or (stop_at is not None and step >= stop_at):
            break
    if rank == 0 and (not len(valid_rows) or not best_path.is_file()):  # no valid split (or
        # no eval yet): the last weights are the best, this run's, even if one before wrote it
        averaged.apply(student)
        torch_save_atomic(best_path, {"model": student.state_dict(), "config": asdict(config),
                                      "vocab": data.vocab, "step": step, "valid": {}})
    teardown_distributed()
    return out


def export_student(checkpoint: str | Path, folder: str | Path, card: str | None = None) -> Path:
    """A ``best.pt``/``checkpoint.pt`` -> a float16 model folder (``load_student`` reads it)."""
    from voxloop.distill.student.model import save_student

    state = load_checkpoint(checkpoint, "student checkpoint")
    model = Student(StudentConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return save_student(model.eval(), state["vocab"], folder, card)
