"""Train a frame-rate decoder on a frozen codec's cached codes (``voxloop codec train-decoder``).

The codec's encoder and RVQ never change: the codes come from the decoder data folder
(``codecs.decoder_data``, computed once), and the codec's codebooks, read once and kept
frozen, turn them into the latent. Each sample of a batch draws its own number of
codebooks K (codebook dropout per sample; ``k_main`` more often), so one decoder serves
K = 4 (what the student speaks) and K = 8 (what the datasets hold).

Losses on the crop after its first frame (the cold start): multi-scale mel,
multi-resolution STFT, L1 on Whisper's log-mel and, optionally, on the frozen Whisper
tiny.en encoder's features. No discriminator.

Resumable: ``OUT/checkpoint.pt`` (model, optimizer, step, minutes trained, RNG) is written
atomically every ``ckpt_minutes`` and at the end; run the same command again to resume.
The batches depend only on (seed, step). With ``max_minutes`` the learning-rate schedule's
progress is the larger of the steps and the minutes spent, and training ends when either
is used up, so a time-boxed run still anneals (its end then depends on the machine's speed).
``init_from`` starts a new run from a shipped decoder (the ``general`` decoder from the
``assistant`` one: the ConvNeXt stack and the STFT head already know speech).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from voxloop.codecs.base import silence_codes
from voxloop.codecs.decoder_config import DecoderTrainSettings, FrameDecoderConfig
from voxloop.codecs.decoder_data import Clip, check_codes_of, read_clips
from voxloop.codecs.decoder_io import load_frame_decoder, save_frame_decoder
from voxloop.codecs.frame_decoder import FrameDecoder
from voxloop.codecs.losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, WhisperFeatureLoss
from voxloop.codecs.registry import load_codec
from voxloop.errors import VoxloopError
from voxloop.training import cosine_lr, load_checkpoint, resume_checkpoint, torch_save_atomic

LR_FLOOR = 0.1
EVAL_BATCHES = 2


def frozen_codebooks(codec_name: str, data_codec: dict,
                     config: FrameDecoderConfig | None = None) -> Tensor:
    """``[K, N, D]`` codebooks of the codec that made the data's codes (sha256 checked),
    refused where a decoder of ``config`` would not make the codec's frames: another hop
    or rate crops its targets out of step with the codes, and nothing else would say so."""
    from voxloop.codecs.io import load_codec_folder

    codec = load_codec_folder(check_codes_of(codec_name, data_codec))
    if config is not None and (config.hop_samples, config.sample_rate_hz) != \
            (codec.hop, codec.sample_rate):
        raise VoxloopError(f"the decoder makes {config.hop_samples} samples a frame at "
                           f"{config.sample_rate_hz} Hz, codec {codec_name} {codec.hop} at "
                           f"{codec.sample_rate} Hz: give the decoder the codec's hop")
    return torch.stack([e.detach().clone() for e in codec.codebook_vectors()])


def masked_latent(codebooks: Tensor, codes: Tensor, k: Tensor) -> Tensor:
    """``codes [B, K, F]``, ``k [B]`` -> ``[B, D, F]``: per sample the sum of its first
    ``k`` stages' code vectors (what the codec's ``dequantize`` gives for K = k)."""
    stages = torch.stack([torch.nn.functional.embedding(codes[:, i], codebooks[i])
                          for i in range(codes.shape[1])], dim=1)  # [B, K, F, D]
    keep = (torch.arange(codes.shape[1])[None] < k[:, None]).to(stages.dtype)  # [B, K]
    return (stages * keep[:, :, None, None]).sum(1).transpose(1, 2)


def sample_batch(clips: list[Clip], batch: int, frames: int, hop: int, silence: np.ndarray,
                 rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Random crops: (``codes [B, K, frames]`` int64, ``wav [B, 1, frames * hop]``, K the
    clips' codebooks); a clip shorter than the crop is padded with silence (its codes: the
    first K of ``silence [K_codec]``)."""
    num_codebooks = clips[0].codes.shape[0]
    codes = np.repeat(silence[None, :num_codebooks, None], batch, 0).repeat(frames, 2)
    codes = codes.astype(np.int64)
    wav = np.zeros((batch, 1, frames * hop), np.float32)
    for b in range(batch):
        clip = clips[int(rng.integers(len(clips)))]
        start = int(rng.integers(0, max(1, clip.codes.shape[1] - frames + 1)))
        piece = clip.codes[:num_codebooks, start:start + frames]
        codes[b, :, :piece.shape[1]] = piece
        audio = clip.audio[start * hop:(start + piece.shape[1]) * hop]
        wav[b, 0, :len(audio)] = audio / 32768.0
    return torch.from_numpy(codes), torch.from_numpy(wav)


def draw_k(settings: DecoderTrainSettings, num_codebooks: int, batch: int,
           rng: np.random.Generator) -> Tensor:
    """Codebooks per sample: from ``k_main`` with ``k_main_fraction``, else uniform 1..K."""
    main = rng.random(batch) < settings.k_main_fraction
    k = np.where(main, rng.choice(settings.k_main, batch), rng.integers(1, num_codebooks + 1,
                                                                        batch))
    return torch.from_numpy(np.minimum(k, num_codebooks).astype(np.int64))


class DecoderLosses(torch.nn.Module):
    def __init__(self, settings: DecoderTrainSettings, sample_rate_hz: int) -> None:
        super().__init__()
        self.settings = settings
        self.mel = MultiScaleMelLoss(sample_rate_hz)
        self.stft = MultiResolutionSTFTLoss()
        self.whisper = WhisperFeatureLoss(settings.whisper_encoder_weight) \
            if settings.whisper_mel_weight or settings.whisper_encoder_weight else None

    def forward(self, estimate: Tensor, target: Tensor) -> dict[str, Tensor]:
        """``[B, 1, T]`` each -> named losses and their weighted ``total``."""
        s = self.settings
        losses = {"mel": self.mel(estimate, target), "stft": self.stft(estimate, target)}
        total = s.mel_weight * losses["mel"] + s.stft_weight * losses["stft"]
        if self.whisper is not None:
            losses.update(self.whisper(estimate, target))
            total = total + s.whisper_mel_weight * losses["whisper_mel"]
            if "whisper_encoder" in losses:
                total = total + s.whisper_encoder_weight * losses["whisper_encoder"]
        losses["total"] = total
        return losses


class Progress:
    """Steps and minutes trained; the schedule's progress is the larger share."""

    def __init__(self, settings: DecoderTrainSettings, step: int = 0,
                 trained_s: float = 0.0) -> None:
        self.settings, self.step, self.trained_s = settings, step, trained_s
        self._since = time.perf_counter()

    def tick(self) -> None:
        now = time.perf_counter()
        self.trained_s += now - self._since
        self._since = now

    @property
    def done(self) -> bool:
        return self.step >= self.settings.steps or (
            self.settings.max_minutes > 0 and self.trained_s >= 60 * self.settings.max_minutes)

    def learning_rate(self) -> float:
        s = self.settings
        share = self.step / s.steps
        if s.max_minutes > 0:
            share = max(share, self.trained_s / (60 * s.max_minutes))
        return cosine_lr(int(share * s.steps), s.lr, s.warmup_steps, s.steps, LR_FLOOR)


def train_decoder(settings: DecoderTrainSettings, config: FrameDecoderConfig | None = None,
                  stop_at: int | None = None) -> Path:
    """Run (or resume) training; returns the run folder, with the decoder in OUT/final/.
    ``stop_at`` ends this process after that step's checkpoint (as a kill would)."""
    config = config or FrameDecoderConfig()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    train_clips, data_codec = read_clips(settings.data, "train")
    held_clips, _ = read_clips(settings.data, "heldout")
    codebooks = frozen_codebooks(settings.codec, data_codec, config)
    if codebooks.shape[0] < config.num_codebooks or codebooks.shape[2] != config.latent_dim:
        raise VoxloopError(f"codec {settings.codec} has {tuple(codebooks.shape)} codebooks; "
                           f"the decoder expects {config.num_codebooks} x D={config.latent_dim}")
    silence = silence_codes(load_codec(settings.codec, decoder="seanet"))
    torch.manual_seed(settings.seed)
    decoder = FrameDecoder(config).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=settings.lr, betas=(0.8, 0.99),
                                  weight_decay=0.01)
    ckpt_path = out / "checkpoint.pt"
    progress = Progress(settings)
    state = resume_checkpoint(ckpt_path, config.to_json(), "decoder")
    if state is not None:
        decoder.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        progress = Progress(settings, state["step"], state["trained_s"])
    elif settings.init_from:
        decoder.load_state_dict(_initial_weights(settings.init_from, config))
    losses_of = DecoderLosses(settings, config.sample_rate_hz)
    writer = _tensorboard(out / "tb")
    (out / "settings.json").write_text(json.dumps(
        {"train": asdict(settings), "decoder": config.to_json()}, indent=2) + "\n")
    hop, frames = config.hop_samples, settings.segment_frames + 1
    # a K above the codebooks the data holds would train its conditioning on fewer stages
    held_k = min(config.num_codebooks, train_clips[0].codes.shape[0])
    bar = tqdm(total=settings.steps, initial=progress.step, desc="decoder train")
    saved_s = time.perf_counter()
    while not progress.done:
        rng = np.random.default_rng([settings.seed, progress.step])
        codes, wav = sample_batch(train_clips, settings.batch_size, frames, hop, silence, rng)
        k = draw_k(settings, held_k, settings.batch_size, rng)
        for group in optimizer.param_groups:
            group["lr"] = progress.learning_rate()
        recon = decoder(masked_latent(codebooks, codes[:, :config.num_codebooks], k), k)
        losses = losses_of(recon[..., hop:], wav[..., hop:])
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(decoder.parameters(), 5.0)
        if torch.isfinite(grad_norm):
            optimizer.step()
        progress.step += 1
        progress.tick()
        bar.update(1)
        bar.set_postfix(mel=f"{losses['mel'].item():.3f}", min=f"{progress.trained_s / 60:.1f}")
        if writer is not None:
            for key, value in losses.items():
                writer.add_scalar(f"train/{key}", value.item(), progress.step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], progress.step)
        if progress.step % settings.eval_every == 0 or progress.done:
            held = evaluate_decoder_loss(decoder, codebooks, held_clips, losses_of, frames, hop,
                                         silence)
            bar.write(f"step {progress.step} ({progress.trained_s / 60:.1f} min): held-out "
                      + ", ".join(f"{key} {value:.4f}" for key, value in held.items()))
            if writer is not None:
                for key, value in held.items():
                    writer.add_scalar(f"heldout/{key}", value, progress.step)
        due = time.perf_counter() - saved_s >= 60 * settings.ckpt_minutes
        if due or progress.done or (stop_at is not None and progress.step >= stop_at):
            _save(ckpt_path, decoder, optimizer, progress, settings, config)
            saved_s = time.perf_counter()
        if stop_at is not None and progress.step >= stop_at:
            return out
    bar.close()
    save_frame_decoder(decoder.eval(), out / "final")
    return out


def _initial_weights(folder: str, config: FrameDecoderConfig) -> dict[str, Tensor]:
    """A shipped decoder's weights (``load_frame_decoder`` gives float32) to start from;
    its architecture must match."""
    start = load_frame_decoder(folder)
    if start.config != config:
        raise VoxloopError(f"--init-from {folder} is a decoder of another architecture "
                           f"({start.config}); pass the same --decoder-* settings")
    return start.state_dict()


def _save(path: Path, decoder: FrameDecoder, optimizer, progress: Progress,
          settings: DecoderTrainSettings, config: FrameDecoderConfig) -> None:
    torch_save_atomic(path, {"model": decoder.state_dict(), "optimizer": optimizer.state_dict(),
                             "step": progress.step, "trained_s": progress.trained_s,
                             "torch_rng": torch.get_rng_state(), "settings": asdict(settings),
                             "config": config.to_json()})


def _tensorboard(folder: Path):
    """A SummaryWriter when tensorboard is installed, else None (logs are optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


@torch.no_grad()
def evaluate_decoder_loss(decoder: FrameDecoder, codebooks: Tensor, clips: list[Clip],
                          losses_of: DecoderLosses, frames: int, hop: int, silence: np.ndarray,
                          k: int = 4) -> dict[str, float]:
    """Mean losses on fixed held-out crops at ``k`` codebooks."""
    decoder.eval()
    rng = np.random.default_rng(12345)
    totals: dict[str, float] = {}
    for _ in range(EVAL_BATCHES):
        codes, wav = sample_batch(clips, 8, frames, hop, silence, rng)
        ks = torch.full((8,), k)
        recon = decoder(masked_latent(codebooks, codes[:, :decoder.config.num_codebooks], ks),
                        ks)
        for key, value in losses_of(recon[..., hop:], wav[..., hop:]).items():
            totals[key] = totals.get(key, 0.0) + value.item() / EVAL_BATCHES
    decoder.train()
    return totals


def export_decoder(checkpoint: str | Path, folder: str | Path, card: str | None = None) -> Path:
    """A training checkpoint as a float16 decoder folder (config.json, safetensors)."""
    state = load_checkpoint(checkpoint, "decoder checkpoint")
    decoder = FrameDecoder(FrameDecoderConfig.from_json(state["config"]))
    decoder.load_state_dict(state["model"])
    return save_frame_decoder(decoder.eval(), folder, card)
