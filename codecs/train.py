"""Train a compact codec: waveform L1 + multi-scale mel + VQ commitment.

One process, or DDP under torchrun (gloo on CPU, nccl on GPU). Every
``ckpt_every`` steps the full state (model, optimizer, step) is written
atomically to ``OUT/checkpoint.pt``; started again, training resumes from it.
The data order depends only on (seed, step, rank), so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from voxloop.audio import read_wav
from voxloop.codecs.config import CodecConfig, CodecTrainSettings
from voxloop.codecs.io import new_codec, save_codec
from voxloop.codecs.losses import MultiScaleMelLoss
from voxloop.codecs.model import NeuralCodec
from voxloop.errors import VoxloopError


def load_split(corpus: Path, split: str) -> list[torch.Tensor]:
    files = sorted((corpus / split).glob("*.wav"))
    if not files:
        raise VoxloopError(f"no {split} wavs under {corpus}: build the corpus first with "
                           "`voxloop codec corpus`")
    return [torch.from_numpy(read_wav(f)[0]) for f in files]


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
                   n_q: int) -> dict[str, torch.Tensor]:
    """``model`` is the codec or its DDP wrapper (whose forward reduces gradients)."""
    recon, commit = model(wav, n_q)
    losses = {"l1": (recon - wav).abs().mean(), "mel": mel_loss(recon, wav), "commit": commit}
    losses["total"] = 0.1 * losses["l1"] + losses["mel"] + losses["commit"]
    return losses


def learning_rate(step: int, s: CodecTrainSettings) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = (step - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
    return s.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def _setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def _save_checkpoint(path: Path, codec, optimizer, step: int, settings, config) -> None:
    """Everything an uninterrupted run would still have, including torch's RNG (the VQ
    re-seeds dead codes from it)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": codec.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "settings": asdict(settings), "config": config.to_json(),
                "torch_rng": torch.get_rng_state()}, tmp)
    tmp.replace(path)


def train(settings: CodecTrainSettings, config: CodecConfig | None = None,
          stop_at: int | None = None) -> Path:
    """Run (or resume) training; returns the run folder. Exports OUT/final/ at the end.

    ``stop_at`` ends this process early after that step's checkpoint, as a kill
    would (tests use it to check that resuming is exact).
    """
    config = config or CodecConfig()
    rank, world = _setup_distributed()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    codec = new_codec(config, name="compact").train()
    optimizer = torch.optim.AdamW(codec.parameters(), lr=settings.lr, betas=(0.8, 0.99),
                                  weight_decay=0.0)
    ckpt_path, step = out / "checkpoint.pt", 0
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state["config"] != config.to_json():
            raise VoxloopError(f"{ckpt_path} was trained with another codec config; use a new "
                               "--out folder or the same settings")
        codec.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        if "torch_rng" in state:  # checkpoints before this field resume all but the RNG
            torch.set_rng_state(state["torch_rng"])
    model = torch.nn.parallel.DistributedDataParallel(codec) if world > 1 else codec
    mel_loss = MultiScaleMelLoss(config.sample_rate_hz)
    corpus = Path(settings.corpus)
    train_clips, held_clips = load_split(corpus, "train"), load_split(corpus, "heldout")
    segment = int(settings.segment_s * config.sample_rate_hz) // codec.hop * codec.hop
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        (out / "settings.json").write_text(json.dumps(
            {"train": asdict(settings), "codec": config.to_json()}, indent=2))
    bar = tqdm(total=settings.steps, initial=step, desc="codec train", disable=rank != 0)
    while step < settings.steps:
        rng = np.random.default_rng([settings.seed, step, rank])
        wav = sample_batch(train_clips, settings.batch_size, segment, rng)
        # Every rank must use the same codebooks: the VQ's collectives follow them.
        shared = np.random.default_rng([settings.seed, step])
        n_q = int(shared.integers(1, config.num_codebooks + 1)) if settings.quantizer_dropout \
            else config.num_codebooks
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        t0 = time.perf_counter()
        losses = forward_losses(model, mel_loss, wav, n_q)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 5.0)
        optimizer.step()
        step += 1
        bar.update(1)
        if writer is not None:
            for key, value in losses.items():
                writer.add_scalar(f"train/{key}", value.item(), step)
            writer.add_scalar("train/step_s", time.perf_counter() - t0, step)
            bar.set_postfix(mel=f"{losses['mel'].item():.3f}", n_q=n_q)
            if step % settings.eval_every == 0 or step == settings.steps:
                held = evaluate_loss(codec, mel_loss, held_clips, segment)
                for key, value in held.items():
                    writer.add_scalar(f"heldout/{key}", value, step)
            if step % settings.ckpt_every == 0 or step == settings.steps:
                _save_checkpoint(ckpt_path, codec, optimizer, step, settings, config)
        if stop_at is not None and step >= stop_at:
            return out
    if rank == 0:
        save_codec(codec.eval(), out / "final")
    if world > 1:
        dist.destroy_process_group()
    return out


@torch.no_grad()
def evaluate_loss(codec: NeuralCodec, mel_loss: MultiScaleMelLoss, clips: list[torch.Tensor],
                  segment: int, batches: int = 4) -> dict[str, float]:
    codec.eval()
    rng = np.random.default_rng(12345)
    totals: dict[str, float] = {}
    for _ in range(batches):
        wav = sample_batch(clips, 8, segment, rng)
        for key, value in forward_losses(codec, mel_loss, wav, codec.num_codebooks).items():
            totals[key] = totals.get(key, 0.0) + value.item() / batches
    codec.train()
    return totals


def export_checkpoint(checkpoint: str | Path, folder: str | Path) -> Path:
    """Write a training checkpoint as a float16 codec folder (config.json, safetensors)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    codec = new_codec(CodecConfig.from_json(state["config"]), name=Path(folder).name)
    codec.load_state_dict(state["model"])
    return save_codec(codec.eval(), folder)
