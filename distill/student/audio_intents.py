"""Which intent the user asked for, read from the sound of the whole question
(:class:`AudioIntents`): a keyword spotter over the tokens the student hears.

The heard-intents head (:mod:`heard_intents`) reads the student's CTC words, and on a new
phrasing those words are often wrong ("tell me the sound a cow makes" heard "tell me the a
south the how many"). This head reads the user's tokens themselves, each frame as the
student embeds it (the semantic token's codebook vector plus its residual levels', from
the student's own frozen buffer), through a few local convolutions (each frame sees ~0.7 s
around it: a word or two), then the maximum and the mean over the turn: *is something
like "cow" anywhere in it*, whatever words carry it. It trains on the student's pack
(every trained phrasing and voice) plus the domain's more phrasings and its questions
outside it as the refusal, spoken by training voices (``audio_intents_train``); on the dev
phrasings it names the asked intent for 90 % of the turns where the word head names 79 %.

Where a student has both, the heard-intents head multiplies its word probabilities by this
head's raised to ``audio_weight`` (``HeardIntents.probabilities``), so every rule that
reads the head (the override, the second look, the slot lean) reads both.

    head = load_audio_intents(folder, student)      # None if the folder has none
    head.log_probs(codes)                            # codes [K, T] -> [L] over head.labels
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

FILENAME = "audio_intents.safetensors"


@dataclass(frozen=True)
class AudioIntentsConfig:
    """The network's shape (the input is the student's: ``k_in`` levels of ``user_vocab``
    codes, ``latent_dim``-d vectors, the residual levels weighted by ``residual_weight``)."""

    k_in: int
    user_vocab: int
    latent_dim: int
    residual_weight: float
    labels: tuple[str, ...]
    width: int = 192
    layers: int = 3
    kernel: int = 5


class AudioIntents(nn.Module):
    """``[B, K, T]`` user codes -> ``[B, L]`` intent logits. ``books [K * N, D]``: the
    student's user codebooks (a buffer, not saved with this head)."""

    def __init__(self, config: AudioIntentsConfig, books: torch.Tensor) -> None:
        super().__init__()
        c = self.config = config
        if books.shape != (c.k_in * c.user_vocab, c.latent_dim):
            raise ValueError(f"user codebooks {tuple(books.shape)}: the head expects "
                             f"{(c.k_in * c.user_vocab, c.latent_dim)}")
        self.register_buffer("books", books.detach().float().clone(), persistent=False)
        levels = torch.full((c.k_in,), c.residual_weight)
        levels[0] = 1.0
        self.register_buffer("levels", levels, persistent=False)
        self.inp = nn.Linear(c.latent_dim, c.width)
        self.norms = nn.ModuleList(nn.LayerNorm(c.width) for _ in range(c.layers))
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Conv1d(c.width, c.width, c.kernel, padding=c.kernel // 2, groups=c.width),
            nn.Conv1d(c.width, 2 * c.width, 1), nn.GELU(), nn.Conv1d(2 * c.width, c.width, 1))
            for _ in range(c.layers))
        self.out = nn.Sequential(nn.LayerNorm(2 * c.width), nn.Linear(2 * c.width, len(c.labels)))

    def forward(self, codes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, T]`` (each level's own ids, 0..N-1), ``mask [B, T]`` (True: a
        frame of the turn) -> logits ``[B, L]``."""
        offsets = self.config.user_vocab * torch.arange(self.config.k_in, device=codes.device)
        x = (self.books[codes + offsets[None, :, None]] * self.levels[None, :, None, None]).sum(1)
        keep = mask[..., None]
        x = self.inp(x) * keep  # [B, T, W]; padding reads as the convolutions' own zeros
        for norm, block in zip(self.norms, self.blocks, strict=True):
            x = x + block((norm(x) * keep).transpose(1, 2)).transpose(1, 2)
        peak = x.masked_fill(~keep, torch.finfo(x.dtype).min).amax(1)
        mean = (x * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.out(torch.cat([peak, mean], -1))

    @torch.inference_mode()
    def log_probs(self, codes: np.ndarray) -> np.ndarray:
        """One turn's user codes ``[K, T]`` -> log-probability of each label ``[L]`` (levels
        beyond the student's ``k_in`` are not heard, as the student does not hear them)."""
        if codes.shape[0] < self.config.k_in or codes.shape[1] == 0:
            raise ValueError(f"user codes {codes.shape}: expected [>= {self.config.k_in}, T > 0]")
        codes = codes[:self.config.k_in]
        ids = torch.from_numpy(codes.astype(np.int64))[None].to(self.books.device)
        mask = torch.ones(1, codes.shape[1], dtype=torch.bool, device=self.books.device)
        return torch.log_softmax(self(ids, mask).float(), -1)[0].cpu().numpy()


def head_config(student, labels: list[str], **shape) -> AudioIntentsConfig:
    """The config of a head for ``student``'s input (its ``k_in`` levels and codebooks)."""
    c = student.config
    if not c.user_latent_dim:
        raise ValueError("an audio intents head needs a student that hears codebook vectors "
                         "(user_latent_dim); this one embeds its user codes itself")
    return AudioIntentsConfig(c.k_in, c.user_vocab, c.user_latent_dim,
                              c.residual_weight or 1.0, tuple(labels), **shape)


def save_audio_intents(head: AudioIntents, folder: str | Path) -> Path:
    """``FOLDER/audio_intents.safetensors``: the weights in float16, the config as metadata
    (the codebooks stay the student's)."""
    from safetensors.torch import save_file

    path = Path(folder) / FILENAME
    state = {k: v.detach().half().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(path), metadata={"audio_intents": json.dumps(asdict(head.config))})
    return path


def load_audio_intents(folder: str | Path, student) -> AudioIntents | None:
    """The head saved in a student's folder (float32, eval mode, on the CPU, reading
    ``student``'s codebooks), or None if it has none. Keep it beside the student, not as one
    of its modules: its weights are not the student's."""
    from safetensors import safe_open

    path = Path(folder) / FILENAME
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        raw = json.loads(f.metadata()["audio_intents"])
        state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118
    config = AudioIntentsConfig(**{**raw, "labels": tuple(raw["labels"])})
    head = AudioIntents(config, student.user_codebooks.cpu())
    head.load_state_dict(state)
    return head.eval()
