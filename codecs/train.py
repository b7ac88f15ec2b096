"""Train a compact codec: waveform L1 + multi-scale mel + VQ commitment, and
(``adversarial``) encodec's MS-STFT discriminator with hinge + feature-matching losses.

One process, or DDP under torchrun (gloo on CPU, nccl on GPU); on a GPU with
bf16 autocast and TF32. Every ``ckpt_every`` steps the full state (model,
discriminator, optimizers, step, RNG) is written atomically to
``OUT/checkpoint.pt``; started again, training resumes from it. The data order
depends only on (seed, step, rank), so a resumed run sees the same batches as
an uninterrupted one (bit-exact on CPU; GPU kernels are not deterministic).
``init_from`` starts a fresh run from trained weights (fine-tuning).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from voxloop.audio import read_wav
from voxloop.codecs.adversarial import (
    adversarial_generator_losses,
    discriminator_step,
    new_discriminator,
)
from voxloop.codecs.config import CodecConfig, CodecTrainSettings
from voxloop.codecs.io import load_codec_folder, new_codec, save_codec
from voxloop.codecs.losses import MultiScaleMelLoss
from voxloop.codecs.model import NeuralCodec
from voxloop.errors import VoxloopError
from voxloop.training import (
    cosine_lr,
    load_checkpoint,
    resume_checkpoint,
    setup_distributed,
    teardown_distributed,
    torch_save_atomic,
)

PROBE_STEPS = 20  # steps timed (after PROBE_SKIP warm-up steps) to fit time_budget_s
PROBE_SKIP = 5
Autocast = Callable[[], contextlib.AbstractContextManager]


def load_split(corpus: Path, split: str, rate_hz: int) -> list[torch.Tensor]:
    """Every wav of a corpus split, refused unless at the codec's ``rate_hz``."""
    files = sorted((corpus / split).glob("*.wav"))
    if not files:
        raise VoxloopError(f"no {split} wavs under {corpus}: build the corpus first with "
                           "`voxloop distill corpus`")
    clips = []
    for f in files:
        samples, found_hz = read_wav(f)
        if found_hz != rate_hz:
            raise VoxloopError(f"{f} is at {found_hz} Hz and this codec at {rate_hz}: build "
                               f"the corpus with --sample-rate-hz {rate_hz}")
        clips.append(torch.from_numpy(samples))
    return clips


def sample_batch(clips: list[torch.Tensor], batch: int, segment: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """Random ``[B, 1, segment]`` crops; short clips are zero-padded."""
    out = torch.zeros(batch, 1, segment)
    for b in range(batch):
        clip = clips[int(rng.integers(len(clips)))]
        start = int(rng.integers(0, max(1, len(clip) - segment + 1)))
        piece = clip[start:start + segment]
        out[b, 0, :len(piece)] = piece
    return out


def forward_losses(model: torch.nn.Module, mel_loss: MultiScaleMelLoss, wav: torch.Tensor,
                   n_q: int, autocast: Autocast = contextlib.nullcontext
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``model`` is the codec or its DDP wrapper (whose forward reduces gradients).

    ``wav [B, 1, T]`` -> (float32 reconstruction ``[B, 1, T]``, reconstruction losses
    with their weighted ``total``); the losses themselves are computed in float32."""
    with autocast():
        recon, commit = model(wav, n_q)
    recon = recon.float()
    losses = {"l1": (recon - wav).abs().mean(), "mel": mel_loss(recon, wav), "commit": commit}
    losses["total"] = 0.1 * losses["l1"] + losses["mel"] + losses["commit"]
    return recon, losses


# A GAN-trained decoder keeps improving late; a tenth of the peak lets an extended run learn.
LR_FLOOR = 0.1


def learning_rate(step: int, s: CodecTrainSettings, total_steps: int | None = None) -> float:
    return cosine_lr(step, s.lr, s.warmup_steps, total_steps or s.steps, LR_FLOOR)


def autocast_for(device: torch.device, precision: str) -> Autocast:
    """A context-manager factory: bf16 autocast, or nothing (fp32)."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def _initial_weights(path: Path, config: CodecConfig) -> dict[str, torch.Tensor]:
    """Generator weights from a codec folder or a training checkpoint, for fine-tuning."""
    if path.is_dir():
        codec = load_codec_folder(path)
        found = codec.config
        weights = codec.state_dict()
    elif path.is_file():
        state = load_checkpoint(path, "codec checkpoint")
        try:
            found, weights = CodecConfig.from_json(state["config"]), state["model"]
        except (KeyError, TypeError) as e:
            raise VoxloopError(f"--init-from {path} is not a codec checkpoint of `voxloop "
                               f"codec train` ({e!r})") from e
    else:
        raise VoxloopError(f"--init-from {path}: no such codec folder or checkpoint")
    if found != config:
        raise VoxloopError(f"--init-from {path} has another codec config: {found}")
    return weights


def _save_checkpoint(path: Path, parts: dict, step: int, total_steps: int | None,
                     settings: CodecTrainSettings, config: CodecConfig) -> None:
    """Everything an uninterrupted run would still have, including torch's RNG (the VQ
    re-seeds dead codes from it). ``parts``: name -> module or optimizer."""
    state = {name: part.state_dict() for name, part in parts.items()}
    state.update(step=step, settings=asdict(settings), config=config.to_json(),
                 torch_rng=torch.get_rng_state())
    if total_steps is not None:
        state["total_steps"] = total_steps
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state()
    torch_save_atomic(path, state)


def _planned_steps(settings: CodecTrainSettings, step: int, started_s: float,
                   probe_s: float, world: int, device: torch.device) -> int:
    """Total steps that end within ``time_budget_s`` (10 % margin), given that the last
    PROBE_STEPS steps took ``probe_s``; rank 0 decides for all."""
    per_step_s = probe_s / PROBE_STEPS
    left_s = 0.9 * settings.time_budget_s - (time.perf_counter() - started_s)
    total = torch.tensor(min(settings.steps, step + max(0, int(left_s / per_step_s))),
                         device=device)
    if world > 1:
        dist.broadcast(total, 0)
    return int(total.item())


def train(settings: CodecTrainSettings, config: CodecConfig | None = None,
          stop_at: int | None = None) -> Path:
    """Run (or resume) training; returns the run folder. Exports OUT/final/ at the end.

    ``stop_at`` ends this process early after that step's checkpoint, as a kill
    would (tests use it to check that resuming is exact).
    """
    started_s = time.perf_counter()
    config = config or CodecConfig()
    rank, world, device = setup_distributed(settings.device)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    codec = new_codec(config, name="compact").train()
    disc = new_discriminator().train() if settings.adversarial else None
    ckpt_path, step, total_steps = out / "checkpoint.pt", 0, None
    state = resume_checkpoint(ckpt_path, config.to_json(), "codec")
    if state is not None:
        codec.load_state_dict(state["model"])
    elif settings.init_from:
        codec.load_state_dict(_initial_weights(Path(settings.init_from), config))
    codec.to(device)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=settings.lr, betas=(0.8, 0.99),
                                  weight_decay=0.0)
    parts: dict = {"model": codec, "optimizer": optimizer}
    if disc is not None:
        disc.to(device)
        parts["discriminator"] = disc
        parts["disc_optimizer"] = torch.optim.AdamW(disc.parameters(), lr=settings.lr,
                                                    betas=(0.5, 0.9), weight_decay=0.0)
    if state is not None:
        for name, part in parts.items():
            if name != "model" and name in state:  # older checkpoints: fresh discriminator
                part.load_state_dict(state[name])
        step, total_steps = state["step"], state.get("total_steps")
        if "torch_rng" in state:  # checkpoints before this field resume all but the RNG
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"])
    model = torch.nn.parallel.DistributedDataParallel(codec) if world > 1 else codec
    mel_loss = MultiScaleMelLoss(config.sample_rate_hz).to(device)
    autocast = autocast_for(device, settings.precision)
    corpus = Path(settings.corpus)
    train_clips, held_clips = (load_split(corpus, split, config.sample_rate_hz)
                               for split in ("train", "heldout"))
    segment = int(settings.segment_s * config.sample_rate_hz) // codec.hop * codec.hop
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        (out / "settings.json").write_text(json.dumps(
            {"train": asdict(settings), "codec": config.to_json()}, indent=2))
    plan_at = step + PROBE_SKIP + PROBE_STEPS if settings.time_budget_s and total_steps is None \
        else None
    bar = tqdm(total=total_steps or settings.steps, initial=step, desc="codec train",
               disable=rank != 0)
    while step < (total_steps or settings.steps):
        if step == (plan_at or 0) - PROBE_STEPS:
            probe_start_s = time.perf_counter()
        rng = np.random.default_rng([settings.seed, step, rank])
        wav = sample_batch(train_clips, settings.batch_size, segment, rng).to(device)
        # Every rank must use the same codebooks: the VQ's collectives follow them.
        shared = np.random.default_rng([settings.seed, step])
        n_q = int(shared.integers(1, config.num_codebooks + 1)) if settings.quantizer_dropout \
            else config.num_codebooks
        for part in (optimizer, parts.get("disc_optimizer")):
            for group in part.param_groups if part is not None else ():
                group["lr"] = learning_rate(step, settings, total_steps)
        t0 = time.perf_counter()
        losses = training_step(model, codec, disc, parts, mel_loss, wav, n_q, step, settings,
                               autocast)
        step += 1
        bar.update(1)
        if step == plan_at:
            total_steps = _planned_steps(settings, step, started_s,
                                         time.perf_counter() - probe_start_s, world, device)
            bar.total = total_steps
            bar.write(f"time budget {settings.time_budget_s:g} s: training {total_steps} steps")
        if writer is not None:
            for key, value in losses.items():
                writer.add_scalar(f"train/{key}", value.item(), step)
            writer.add_scalar("train/step_s", time.perf_counter() - t0, step)
            bar.set_postfix(mel=f"{losses['mel'].item():.3f}", n_q=n_q)
            last = step == (total_steps or settings.steps)
            if step % settings.eval_every == 0 or last:
                held = evaluate_loss(codec, mel_loss, held_clips, segment)
                for key, value in held.items():
                    writer.add_scalar(f"heldout/{key}", value, step)
                bar.write(f"step {step}: held-out mel {held['mel']:.4f}")
            if step % settings.ckpt_every == 0 or last:
                _save_checkpoint(ckpt_path, parts, step, total_steps, settings, config)
        if stop_at is not None and step >= stop_at:
            return out
    if rank == 0:
        save_codec(codec.eval(), out / "final")
    teardown_distributed()
    return out


def training_step(model: torch.nn.Module, codec: NeuralCodec, disc: torch.nn.Module | None,
                  parts: dict, mel_loss: MultiScaleMelLoss, wav: torch.Tensor, n_q: int,
                  step: int, settings: CodecTrainSettings, autocast: Autocast
                  ) -> dict[str, torch.Tensor]:
    """One generator update (and one discriminator update when adversarial); returns the
    detached losses. A step whose gradient is not finite is skipped (same on every rank:
    the gradients are already averaged)."""
    recon, losses = forward_losses(model, mel_loss, wav, n_q, autocast)
    if disc is not None and step >= settings.adversarial_start_step:
        with autocast():
            adversarial = adversarial_generator_losses(disc, recon, wav)
        losses.update({k: v.float() for k, v in adversarial.items()})
        losses["total"] = (losses["total"] + settings.adversarial_weight * losses["adv"]
                           + settings.feature_weight * losses["feat"])
    optimizer = parts["optimizer"]
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(codec.parameters(), 5.0)
    if torch.isfinite(grad_norm):
        optimizer.step()
    losses["grad_norm"] = grad_norm
    if disc is not None:
        losses["disc"] = discriminator_step(disc, parts["disc_optimizer"], recon, wav, autocast)
    return {k: v.detach() for k, v in losses.items()}


@torch.no_grad()
def evaluate_loss(codec: NeuralCodec, mel_loss: MultiScaleMelLoss, clips: list[torch.Tensor],
                  segment: int, batches: int = 4) -> dict[str, float]:
    codec.eval()
    device = next(codec.parameters()).device
    rng = np.random.default_rng(12345)
    totals: dict[str, float] = {}
    for _ in range(batches):
        wav = sample_batch(clips, 8, segment, rng).to(device)
        _, losses = forward_losses(codec, mel_loss, wav, codec.num_codebooks)
        for key, value in losses.items():
            totals[key] = totals.get(key, 0.0) + value.item() / batches
    codec.train()
    return totals


def export_checkpoint(checkpoint: str | Path, folder: str | Path) -> Path:
    """Write a training checkpoint as a float16 codec folder (config.json, safetensors)."""
    state = load_checkpoint(checkpoint, "codec checkpoint")
    codec = new_codec(CodecConfig.from_json(state["config"]), name=Path(folder).name)
    codec.load_state_dict(state["model"])
    return save_codec(codec.eval(), folder)
